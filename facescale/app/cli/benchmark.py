"""`facescale benchmark`: LFW's verification protocol and View 2 style pairs files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from facescale.errors import FacescaleError

from .app import ModelOption, state_of
from .render import err, fmt, out

if TYPE_CHECKING:

    from facescale.serving.recognizer import Backend


benchmark_app = typer.Typer(help="Standard benchmarks of the model and the dlib backend.", no_args_is_help=True)


@benchmark_app.command("lfw")
def benchmark_lfw(
    ctx: typer.Context,
    pairs_file: Annotated[Path, typer.Argument(metavar="PAIRS_FILE", help="pairs in LFW's pairs.txt format")],
    images_dir: Annotated[Path, typer.Argument(metavar="IMAGES_DIR", help="IMAGES_DIR/Name/Name_NNNN.jpg")],
    model: ModelOption = None,
    backend: Annotated[str, typer.Option("--backend", "-b", help="model, dlib or all")] = "all",
    face: Annotated[
        str, typer.Option(help="centre: the face nearest the image centre (LFW-style photos); single: the API's rule")
    ] = "centre",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """LFW verification (View 2): per fold a threshold from the other folds; accuracy, ROC AUC, coverage."""
    from facescale.pipeline.faces import CropParams
    from facescale.serving.benchmark import Embed, FaceChoice, read_pairs, run_benchmark
    from facescale.serving.loading import crop_params, image_limits
    from facescale.serving.recognizer import DlibEmbedder, FaceFinder

    state = state_of(ctx)
    if backend not in ("model", "dlib", "all"):
        raise FacescaleError(f"unknown backend {backend!r}: use model, dlib or all")
    if face not in ("centre", "single"):
        raise FacescaleError(f"unknown face choice {face!r}: use centre or single")
    pairs = read_pairs(pairs_file)  # a bad file fails before any model work
    if not images_dir.is_dir():
        raise FacescaleError(f"images folder not found: {images_dir}")
    embedders: dict[Backend, Embed] = {}
    model_id = None
    params: CropParams
    if backend in ("model", "all"):
        recognizer = state.recognizer(model)
        model_id, params = recognizer.model_id, recognizer.crop_params
        embedders["model"] = lambda crops: recognizer.embed(crops, "model")
    elif model is not None:  # dlib on the crops of that model's dataset version
        record = state.services.models().resolve(model)
        model_id, params = record.model_id, crop_params(state.services.datasets(), record.version_id)
    else:
        from facescale.pipeline.curate import crop_params as curation_crop

        params = curation_crop(state.settings.curation)
    if backend in ("dlib", "all"):
        embedders["dlib"] = DlibEmbedder(params).embed
    photos = len(pairs.photos())
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(f"photos of {len(pairs.pairs)} pairs", total=photos)
        result = run_benchmark(
            pairs, images_dir, FaceFinder(params), embedders, face=cast("FaceChoice", face),
            limits=image_limits(state.settings.serving), model_id=model_id, pairs_name=str(pairs_file),
            progress=lambda done: progress.update(task, completed=done),
        )
    if as_json:
        out.print_json(json.dumps(result.to_json()))
        return
    table = Table("backend", "accuracy (mean +- std)", "std. error", "on scored pairs", "ROC AUC", "coverage",
                  title=f"LFW View 2: {pairs.folds} folds x {2 * pairs.per_fold} pairs, {photos} photos, "
                        f"face: {face}" + (f", model {model_id}" if model_id else ""))
    for name, r in result.backends.items():
        table.add_row(name, f"{r.accuracy_mean:.4f} +- {r.accuracy_std:.4f}", f"{r.accuracy_sem:.4f}",
                      f"{r.scored_accuracy:.4f}", fmt(r.roc_auc), f"{r.coverage:.4f}")
    out.print(table)
    reasons = Counter(result.no_face.values())
    for name, r in result.backends.items():
        if r.failed:
            reasons[f"{name}: no embedding"] = len(r.failed)
    if reasons:
        listed = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
        out.print(Text(f"photos that count as errors in their pairs: {listed} (--json lists them)"))


@benchmark_app.command("lfw-pairs")
def benchmark_lfw_pairs(
    ctx: typer.Context,
    images_dir: Annotated[Path, typer.Argument(metavar="IMAGES_DIR", help="IMAGES_DIR/Name/Name_NNNN.jpg")],
    out_file: Annotated[Path, typer.Argument(metavar="OUT", help="the pairs file to write")],
    folds: Annotated[int, typer.Option(min=2, help="folds (LFW: 10), disjoint in people")] = 10,
    pairs: Annotated[int, typer.Option(min=1, help="matched and mismatched pairs per fold (LFW: 300)")] = 300,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    unseen_by: Annotated[
        str | None, typer.Option(help="leave out every person of this model's dataset version (id or 'latest')")
    ] = None,
) -> None:
    """Write a View 2 style pairs file (LFW's pairs.txt format) from a folder of people."""
    from facescale.serving.benchmark import make_pairs
    from facescale.storage.fs import local_atomic_path

    state = state_of(ctx)
    exclude: list[str] = []
    if unseen_by is not None:
        record = state.services.models().resolve(unseen_by)
        exclude = [i.name for i in state.services.datasets().get(record.version_id).identities]
    made = make_pairs(images_dir, folds, pairs, seed=seed, exclude=exclude)
    with local_atomic_path(out_file) as tmp:
        Path(tmp).write_text(made.text(), encoding="utf-8")
    people = len({p.name for p in made.photos()})
    left = f", {len(exclude)} people of model {unseen_by} left out" if unseen_by else ""
    out.print(Text(f"wrote {out_file}: {folds} folds x {2 * pairs} pairs, {people} people, "
                   f"{len(made.photos())} photos{left}"))
