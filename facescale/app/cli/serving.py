"""`facescale identify`, `verify`, `calibrate`, `serve` and `demo-web`: the model in use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from facescale.errors import FacescaleError

from .app import BackendOption, ModelOption, State, app, maybe_backend, parse_backend, state_of
from .render import err, fmt, out

if TYPE_CHECKING:
    import numpy as np


def _photo(path: Path, state: State) -> np.ndarray:
    from facescale.serving.images import load_image
    from facescale.serving.loading import image_limits

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FacescaleError(f"cannot read {path}: {exc.strerror or exc}") from None
    return load_image(data, image_limits(state.settings.serving), str(path))


@app.command("identify")
def identify_cmd(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="photos to look at")],
    model: ModelOption = None,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", min=1, max=50, help="identities per face")] = None,
    annotate: Annotated[
        Path | None, typer.Option("--annotate", help="write each photo with boxes and names here (a folder)")
    ] = None,
    backend: BackendOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Find every face in each photo and say who it is (top-k identities, 'unknown' below the threshold)."""
    from facescale.serving.images import annotate as draw
    from facescale.serving.images import encode_jpeg
    from facescale.storage.fs import local_atomic_path

    state = state_of(ctx)
    asked = maybe_backend(backend)
    photos = [_photo(path, state) for path in images]  # bad input fails before any model work
    recognizer = state.recognizer(model)
    chosen = recognizer.backend(asked)
    k = top_k or state.settings.serving.top_k
    results: list[dict[str, Any]] = []
    for path, pixels in zip(images, photos, strict=True):
        matches = recognizer.identify(pixels, k, chosen)
        results.append({"image": str(path), "faces": [m.to_json() for m in matches]})
        if annotate is not None:
            annotate.mkdir(parents=True, exist_ok=True)
            labels = [
                (m.box, f"{m.identity or 'unknown'} {100 * m.confidence:.0f}%", m.identity is not None) for m in matches
            ]
            target = annotate / f"{path.stem}.jpg"
            with local_atomic_path(target) as tmp:
                Path(tmp).write_bytes(encode_jpeg(draw(pixels, labels)))
            results[-1]["annotated"] = str(target)
    if as_json:
        out.print_json(json.dumps({"model_id": recognizer.model_id, "backend": chosen, "results": results}))
        return
    threshold = recognizer.unknown_threshold(chosen)
    score = "confidence" if chosen == "model" else "similarity"
    table = Table("image", "face (x, y, w, h)", "identity", score, "other candidates",
                  title=f"model {recognizer.model_id}, {chosen} backend; unknown below {threshold:.3f}")
    for result in results:
        if not result["faces"]:
            table.add_row(Text(result["image"]), "-", "no face found", "", "")
        for face in result["faces"]:
            b = face["box"]
            others = ", ".join(f"{c['identity']} {c['confidence']:.3f}" for c in face["candidates"][1:])
            table.add_row(
                Text(result["image"]), f"{b['x']}, {b['y']}, {b['width']}, {b['height']}",
                Text(face["identity"] or "unknown"), f"{face['confidence']:.3f}", Text(others),
            )
    out.print(table)
    for result in results:
        if "annotated" in result:
            out.print(Text(f"annotated: {result['annotated']}"))


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="two photos (same person?), or one with --identity")],
    identity: Annotated[
        str | None, typer.Option("--identity", "-i", help="check one photo against this enrolled identity")
    ] = None,
    backend: BackendOption = None,
    model: ModelOption = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Are two photos the same person, or is a photo the enrolled identity? (similarity, decision, threshold)"""
    state = state_of(ctx)
    asked = maybe_backend(backend)
    if identity is None and len(images) != 2:
        raise FacescaleError("give two photos to compare, or one photo and --identity NAME")
    if identity is not None and len(images) != 1:
        raise FacescaleError("with --identity, give exactly one photo")
    photos = [_photo(p, state) for p in images]  # bad input fails before any model work
    recognizer = state.recognizer(model)
    if identity is None:
        result = recognizer.verify_pair(photos[0], photos[1], asked)
        what = f"{images[0]} vs {images[1]}"
    else:
        result = recognizer.verify_identity(photos[0], identity, asked)
        what = f"{images[0]} vs {result['identity']} ({result['enrolled_photos']} enrolled photos)"
    result["model_id"] = recognizer.model_id
    if as_json:
        out.print_json(json.dumps(result))
        return
    verdict = "same person" if result["same"] else "different people"
    out.print(
        Text(
            f"{what}: {verdict} (similarity {result['similarity']:.4f}, threshold {result['threshold']:.4f}, "
            f"{result['backend']} backend, model {result['model_id']})"
        )
    )


@app.command("calibrate")
def calibrate_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(metavar="MODEL", help="registered model id, or 'latest'")] = "latest",
    unseen: Annotated[
        Path | None,
        typer.Option(help="a folder of people the model never saw (one sub-folder each, e.g. lfw-dev): "
                     "pairs accuracy on them, and strangers for the unknown threshold"),
    ] = None,
    gallery: Annotated[
        int | None,
        typer.Option(min=1, help="enrolled training photos per identity (default: serving.gallery_per_identity)"),
    ] = None,
    max_pairs: Annotated[
        int | None, typer.Option(min=10, help="validation pairs per backend (default: serving.calibration_pairs)")
    ] = None,
    unseen_identities: Annotated[int, typer.Option(min=2, help="at most this many unseen people")] = 200,
    backends: Annotated[str, typer.Option(help="comma-separated backends to calibrate")] = "model,dlib",
) -> None:
    """Calibrate a model again: thresholds, enrolment, the default backend, and the report (stored with it).

    A model is calibrated when it is registered; this measures it again (other settings, or
    a folder of strangers for the unknown thresholds and the unseen-pairs report).
    """
    state = state_of(ctx)
    chosen = [parse_backend(b.strip()) for b in backends.split(",") if b.strip()]
    state.tensorflow()
    calibration = state.services.calibrate_model(
        model, backends=chosen, gallery_per_identity=gallery, max_pairs=max_pairs, unseen=unseen,
        unseen_identities=unseen_identities, progress=lambda line: err.print(Text(line)),
    )
    report = calibration.report
    table = Table("backend", "check", "pairs", "threshold", "accuracy", "precision", "recall", "ROC AUC",
                  title=f"model {calibration.model_id}: verification")
    for backend, entry in report["backends"].items():
        for check in ("pairs", "identity", "unseen_pairs"):
            if check in entry:
                m = entry[check]
                table.add_row(backend, {"pairs": "val pairs", "identity": "val vs templates",
                                        "unseen_pairs": "unseen people"}[check],
                              str(m["pairs"]), fmt(m["threshold"]), fmt(m["accuracy"]), fmt(m["precision"]),
                              fmt(m["recall"]), fmt(m["roc_auc"]))
    out.print(table)
    ident = Table("backend", "val top-1", "right at threshold", "unknown below", "strangers refused", "strangers",
                  title=f"model {calibration.model_id}: identification (validation photos)")
    for backend, entry in report["identify"].items():
        ident.add_row(
            backend + (" (default)" if backend == calibration.default_backend else ""), fmt(entry.get("val_top1")),
            fmt(entry.get("answered_right")), fmt(calibration.unknown_thresholds[backend]),
            fmt(entry.get("strangers_refused")), str(entry.get("strangers", 0)),
        )
    out.print(ident)


@app.command("serve")
def serve_cmd(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="interface (default: serving.host)")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="port (default: serving.port; 0: any free)")
    ] = None,
    model: ModelOption = None,
) -> None:
    """Serve the identify / verify HTTP API and its web page (follows newly registered models)."""
    state = state_of(ctx)
    settings = state.settings.serving
    updates = {"host": host, "port": port, "model": model}
    settings = settings.model_copy(update={k: v for k, v in updates.items() if v is not None})
    if settings.token is None and not _loopback(settings.host):
        raise FacescaleError(
            f"serving on {settings.host} without serving.token would answer anyone who reaches it "
            "(identities are personal data): set serving.token (FACESCALE_SERVING__TOKEN) or serve on 127.0.0.1"
        )
    state.tensorflow()
    from facescale.serving.server import run

    run(state.services.models(), state.services.datasets(), settings)


def _loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or name (what only this machine reaches)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("demo-web")
def demo_web(
    photos: Annotated[Path, typer.Argument(help="a folder with one sub-folder of photos per person (e.g. lfw-dev)")],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 picks a free port")] = 8080,
    hostile: Annotated[bool, typer.Option(help="mix broken and malicious URLs into every result list")] = False,
    seed: Annotated[int, typer.Option(help="varies which trouble images each name gets")] = 0,
) -> None:
    """Serve the local demo image-search site (for the demo engine, tests and people)."""
    from facescale.demoweb import serve

    if not photos.is_dir():
        raise FacescaleError(f"not a directory: {photos}")
    serve(photos, host=host, port=port, hostile=hostile, seed=seed)
