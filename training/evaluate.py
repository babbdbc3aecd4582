"""Evaluation of a trained model on a CURATED version's test split: metrics and plots.

`evaluate` streams the split through the model (`predict.predict_split`, never the whole
split in memory: per sample only its label and top-5 predictions are kept) and reports
top-1, top-5, per-identity accuracy and the most-confused pairs (true -> predicted) in
``metrics.json``, with the PNG plots of `plots`. With a `leaky.leaky_baseline` result it
reports the seed's leaky split beside the honest one.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from facescale.errors import NotFoundError
from facescale.storage import DatasetStore

from .callbacks import write_json
from .plots import plot_confusion, plot_curves, plot_feature_maps, plot_filters, sample_image
from .predict import Predictions, load_model, predict_split
from .rundir import (
    CONFUSION_PNG,
    CURVES_PNG,
    FEATURE_MAPS_PNG,
    FILTERS_PNG,
    HISTORY_FILE,
    LABELS_FILE,
    METRICS_FILE,
    Evaluation,
    who,
)

log = logging.getLogger(__name__)


def summarize(
    predictions: Predictions,
    labels: Mapping[int, Mapping[str, str]],
    *,
    version_id: str,
    split: str,
    num_classes: int,
    top_confused: int = 10,
) -> Evaluation:
    """Accuracies, per-identity accuracy and the most-confused pairs of a split's predictions.

    Args:
        predictions: from `predict_split`.
        labels: label -> ``{"name", "slug"}`` (``labels.json``).
        version_id: the version predicted on.
        split: the split predicted on.
        num_classes: the model's class count.
        top_confused: how many (true, predicted) pairs to report.

    Returns:
        The `Evaluation` (no plots yet).
    """
    y, top = predictions.labels, predictions.top
    correct = predictions.predicted == y
    in_top5 = (top == y[:, None]).any(axis=1)
    per_identity = []
    for label in sorted(set(y.tolist())):
        mask = y == label
        hits = int(correct[mask].sum())
        per_identity.append(
            {
                "label": int(label),
                **who(labels, label),
                "examples": int(mask.sum()),
                "correct": hits,
                "accuracy": hits / int(mask.sum()),
            }
        )
    per_identity.sort(key=lambda row: (row["accuracy"], row["label"]))
    counts = Counter(zip(y[~correct].tolist(), predictions.predicted[~correct].tolist(), strict=True))
    totals = Counter(y.tolist())
    pairs = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_confused]
    confused = [
        {
            "true": {"label": int(t), **who(labels, t)},
            "predicted": {"label": int(p), **who(labels, p)},
            "count": int(n),
            "share": n / totals[t],
        }
        for (t, p), n in pairs
    ]
    return Evaluation(
        version_id=version_id,
        split=split,
        examples=int(y.size),
        num_classes=num_classes,
        top1=float(correct.mean()),
        top5=float(in_top5.mean()),
        per_identity=per_identity,
        confused_pairs=confused,
    )


def evaluate(
    store: DatasetStore,
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    batch_size: int = 64,
    top_confused: int = 10,
    plots: bool = True,
    leaky: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Evaluate a finished training output on its dataset version; write metrics.json and PNGs.

    Args:
        store: the dataset store holding the version named in ``labels.json``.
        model_dir: a training output directory (``model.keras``, ``labels.json``,
            ``history.csv``), or a registered model's directory.
        out_dir: where to write (default ``<model_dir>/eval``).
        split: the split to evaluate on.
        batch_size: samples per prediction batch.
        top_confused: how many most-confused pairs to report.
        plots: write the PNG plots.
        leaky: a `leaky_baseline` result to report beside this evaluation.

    Returns:
        The `Evaluation`.
    """
    model_dir = Path(model_dir)
    out = Path(out_dir) if out_dir is not None else model_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    labels_doc = _read_json(model_dir / LABELS_FILE)
    labels = {int(k): v for k, v in labels_doc["labels"].items()}
    model = load_model(model_dir)
    predictions = predict_split(model, store, labels_doc["version_id"], split, batch_size)
    result = summarize(
        predictions, labels, version_id=labels_doc["version_id"], split=split,
        num_classes=int(labels_doc["num_classes"]), top_confused=top_confused,
    )
    written: dict[str, str] = {}
    if plots:
        history = model_dir / HISTORY_FILE
        if history.is_file():
            plot_curves(history, out / CURVES_PNG)
            written["curves"] = CURVES_PNG
        plot_confusion(predictions, labels, out / CONFUSION_PNG)
        written["confusion"] = CONFUSION_PNG
        plot_filters(model, out / FILTERS_PNG)
        written["filters"] = FILTERS_PNG
        image = sample_image(store, labels_doc["version_id"], split, int(model.input_shape[1]))
        plot_feature_maps(model, image, out / FEATURE_MAPS_PNG)
        written["feature_maps"] = FEATURE_MAPS_PNG
    comparison = None
    if leaky is not None:
        comparison = {**dict(leaky), "honest_top1": result.top1, "gap": leaky["top1"] - result.top1}
    result = Evaluation(**{**asdict(result), "plots": written, "leaky": comparison})
    write_json(out / METRICS_FILE, result.to_json())
    log.info(
        "evaluated %s on %s/%s: top-1 %.4f, top-5 %.4f over %d samples; metrics in %s",
        model_dir, result.version_id, split, result.top1, result.top5, result.examples, out / METRICS_FILE,
    )
    return result


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"not found: {path} (not a finished training output?)") from None


