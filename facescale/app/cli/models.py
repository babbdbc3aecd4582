"""`facescale train`, `evaluate` and `facescale models`: training runs and the model registry."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from .app import app, state_of
from .render import backend_line, err, fmt, out

models_app = typer.Typer(help="Trained models in the registry.", no_args_is_help=True)


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    version: Annotated[
        str, typer.Option("--version", help="dataset version id, or 'latest' (newest published)")
    ] = "latest",
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="local training directory (default: facescale-runs/<version>); rerun to resume"),
    ] = None,
    max_epochs: Annotated[int | None, typer.Option(min=1, help="override training.max_epochs")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="cap batches per epoch (bounded runs)")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="override training.batch_size (per replica)")] = None,
    image_size: Annotated[int | None, typer.Option(min=16, help="override training.image_size")] = None,
    backbone: Annotated[
        str | None, typer.Option(help="override training.backbone: inception_v3, or tiny (mechanics and smoke runs)")
    ] = None,
    warm_start: Annotated[
        str | None, typer.Option("--warm-start", help="registered model (id or 'latest') to start from")
    ] = None,
    register: Annotated[bool, typer.Option(help="register the trained model")] = True,
) -> None:
    """Train the Inception V3 identity model on a dataset version and register it."""
    state = state_of(ctx)
    state.tensorflow()
    overrides = {"max_epochs": max_epochs, "batch_size": batch_size, "image_size": image_size, "backbone": backbone}
    trained = state.services.train_model(
        version, run_dir=out_dir, settings=state.services.training_settings(overrides), warm_start=warm_start,
        max_steps_per_epoch=max_steps, register=register, verbose=1 if sys.stdout.isatty() else 2,
        progress=lambda line: err.print(Text(line)),
    )
    result, record, parent = trained.result, trained.record, trained.parent
    table = Table("", "", title="training summary", show_header=False)
    table.add_row("dataset version", Text(result.version_id))
    table.add_row("classes", str(result.num_classes))
    table.add_row("epochs", f"{result.epochs} (stopped by {result.stopped_by})")
    table.add_row(f"best {result.monitor}", f"{fmt(result.best_value)} at epoch {fmt(result.best_epoch)}")
    for key in ("accuracy", "val_accuracy", "val_top5_accuracy"):
        if result.history.get(key):
            table.add_row(f"final {key}", fmt(result.history[key][-1]))
    table.add_row("replicas x batch", f"{result.replicas} x {result.global_batch_size // max(1, result.replicas)}")
    if result.warm_start:
        w = result.warm_start
        verdict = {True: "at least as good", False: "WORSE", None: "no test samples"}[w["at_least_as_good"]]
        table.add_row(
            "warm start",
            Text(
                f"from {parent.model_id if parent else '?'}: "
                f"{w['copied_classes']} classes kept, {w['new_classes']} new; "
                f"on the old identities' {w['test_samples']} test samples {fmt(w['previous_accuracy'])} -> "
                f"{fmt(w['new_accuracy'])} ({verdict})"
            ),
        )
    table.add_row("seconds", fmt(result.seconds, 1))
    table.add_row("output", Text(str(result.out_dir)))
    if record is not None:
        table.add_row("registered as", Text(record.model_id))
        calibration = record.metrics.get("calibration")
        if calibration:
            table.add_row("serving backend", backend_line(calibration))
    out.print(table)


@app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(metavar="MODEL", help="registered model id, or 'latest'")],
    leaky_baseline: Annotated[
        bool,
        typer.Option(
            "--leaky-baseline",
            help="also train the same config on the seed's leaky split (samples split after augmentation) "
            "and report both accuracies",
        ),
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="local working directory (default: facescale-runs/eval-<model>)")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="samples per prediction batch")] = 64,
) -> None:
    """Evaluate a registered model on its dataset version's test split (metrics + PNG plots)."""
    state = state_of(ctx)
    state.tensorflow()
    evaluated = state.services.evaluate_model(
        model, work_dir=out_dir, leaky_baseline=leaky_baseline, batch_size=batch_size,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    result, updated, registry = evaluated.evaluation, evaluated.record, state.services.models()
    console = out
    console.print(
        Text(
            f"model {updated.model_id} on {result.version_id} ({result.split}, {result.examples} samples): "
            f"top-1 {result.top1:.4f}, top-5 {result.top5:.4f}"
        )
    )
    if result.leaky is not None:
        side = Table("split", "test samples", "top-1", "top-5", "test photos also in train", title="honest vs leaky")
        side.add_row("by source photo (ours)", str(result.examples), fmt(result.top1), fmt(result.top5), "0%")
        side.add_row(
            "by sample after augmentation (seed)", str(result.leaky["examples"]), fmt(result.leaky["top1"]),
            fmt(result.leaky["top5"]), f"{100 * result.leaky['leak_rate']:.0f}%",
        )
        console.print(side)
        gap = result.leaky["gap"]
        console.print(Text(f"top-1 gap, leaky - honest: {gap:+.4f}" + (" (the leak inflates it)" if gap > 0 else "")))
    worst = Table("identity", "label", "test samples", "top-1", title="worst identities")
    for row in result.per_identity[:5]:
        worst.add_row(Text(row["name"]), str(row["label"]), str(row["examples"]), fmt(row["accuracy"]))
    console.print(worst)
    if result.confused_pairs:
        pairs = Table("true", "predicted as", "count", "share", title="most-confused pairs")
        for pair in result.confused_pairs:
            pairs.add_row(
                Text(pair["true"]["name"]), Text(pair["predicted"]["name"]), str(pair["count"]), fmt(pair["share"], 2)
            )
        console.print(pairs)
    files = registry.location.display(registry.files_dir(updated.model_id))
    console.print(Text(f"metrics and plots: {evaluated.eval_dir.resolve()}"))
    for name in result.plots.values():
        console.print(Text(f"  {files}/eval/{name}"))


@models_app.command("list")
def models_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List registered models, oldest first."""
    records = state_of(ctx).services.models().list()
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json", exclude={"files", "config"}) for r in records]))
        return
    if not records:
        out.print("no models registered yet")
        return
    table = Table("model", "created (UTC)", "dataset version", "classes", "parent", "epochs", "test top-1")
    for r in records:
        training = r.metrics.get("training", {})
        evaluation = r.metrics.get("evaluation", {})
        table.add_row(
            r.model_id,
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            Text(r.version_id),
            str(r.num_classes),
            Text(r.parent or "-"),
            fmt(training.get("epochs")),
            fmt(evaluation.get("top1")),
        )
    out.print(table)


@models_app.command("show")
def models_show(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(metavar="MODEL", help="a model id, or 'latest'")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one registered model: data, configuration, metrics, files."""
    registry = state_of(ctx).services.models()
    record = registry.resolve(model)
    if as_json:
        out.print_json(record.model_dump_json())
        return
    out.print(f"[bold]{record.model_id}[/]")
    out.print(Text(f"created {record.created_at:%Y-%m-%d %H:%M:%S} UTC, dataset version {record.version_id}, "
                   f"{record.num_classes} classes, parent {record.parent or '-'}"))
    training = record.metrics.get("training", {})
    if training:
        out.print(Text(
            f"training: {training.get('epochs')} epochs (stopped by {training.get('stopped_by')}), best "
            f"{training.get('monitor')} {fmt(training.get('best_value'))} at epoch {training.get('best_epoch')}"
        ))
    warm = record.metrics.get("warm_start")
    if warm:
        out.print(Text(
            f"warm start: old identities' test accuracy {fmt(warm.get('previous_accuracy'))} -> "
            f"{fmt(warm.get('new_accuracy'))} (at least as good: {warm.get('at_least_as_good')})"
        ))
    calibration = record.metrics.get("calibration")
    out.print(Text("serving: ") + (backend_line(calibration) if calibration else Text("not calibrated")))
    served = record.metrics.get("serving_test")
    if served:
        out.print(Text(
            f"served on the {served['split']} photos ({served['photos']}): the {served['backend']} backend answers "
            f"{fmt(served['answered_right'])} right, {fmt(served['unknown'])} unknown (top-1 {fmt(served['top1'])})"
        ))
    evaluation = record.metrics.get("evaluation")
    if evaluation:
        line = f"evaluation ({evaluation['split']}, {evaluation['examples']} samples): "
        line += f"top-1 {fmt(evaluation['top1'])}, top-5 {fmt(evaluation['top5'])}"
        if evaluation.get("leaky"):
            line += f"; leaky split top-1 {fmt(evaluation['leaky']['top1'])}"
        out.print(Text(line))
    table = Table("file", "bytes", "sha256")
    for f in record.files:
        table.add_row(Text(f.path), str(f.bytes), f.sha256[:16])
    out.print(table)
    out.print(Text(f"files: {registry.location.display(registry.files_dir(record.model_id))}"))


@models_app.command("latest")
def models_latest(ctx: typer.Context) -> None:
    """Print the id of the newest registered model."""
    out.print(Text(state_of(ctx).services.models().resolve("latest").model_id))
