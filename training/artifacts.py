"""Model artifacts: a finished training output registered in storage's model registry, and back.

What a registered model holds (``<root>/models/<model_id>/files/``)::

    model.keras     the best model, float32, no optimizer state
    labels.json     version id, class count, label -> {name, slug}
    training.json   the TrainResult: settings, history, stop reason, warm-start report
    history.csv     per-epoch metrics
    eval/           after `facescale evaluate`: metrics.json and the PNG plots

The record (``model.json``) names the dataset version, the training settings, the parent
model of a warm start, and the metrics (training summary; ``evaluation`` once evaluated).
Registering the same training output twice returns the first record (the fingerprint is
the sha256 of ``model.keras``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from facescale.errors import ConfigError
from facescale.storage import ModelRecord, ModelRegistry

from .rundir import (
    HISTORY_FILE,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RESULT_FILE,
    Evaluation,
    TrainResult,
    file_sha256,
)

log = logging.getLogger(__name__)

RUN_FILES = (MODEL_FILE, LABELS_FILE, RESULT_FILE, HISTORY_FILE)
EVAL_PREFIX = "eval"


def training_metrics(result: TrainResult) -> dict[str, Any]:
    """The training summary kept in a model's record."""
    final = {k: v[-1] for k, v in result.history.items() if v}
    return {
        "training": {
            "epochs": result.epochs,
            "stopped_by": result.stopped_by,
            "monitor": result.monitor,
            "best_epoch": result.best_epoch,
            "best_value": result.best_value,
            "final": final,
            "seconds": result.seconds,
            "replicas": result.replicas,
        },
        **({"warm_start": result.warm_start} if result.warm_start else {}),
    }


def register_run(registry: ModelRegistry, out_dir: str | os.PathLike[str], parent: str | None = None) -> ModelRecord:
    """Register a finished training output (idempotent: the same output gives the same record).

    Args:
        registry: the model registry.
        out_dir: a training output directory holding ``training.json``.
        parent: the registered model it was warm-started from.

    Returns:
        The model's record.
    """
    out = Path(out_dir)
    if not (out / RESULT_FILE).is_file():
        raise ConfigError(f"{out} holds no finished training run (no {RESULT_FILE})")
    result = TrainResult.load(out)
    files = [name for name in RUN_FILES if (out / name).is_file()]
    record, created = registry.register(
        out,
        files,
        version_id=result.version_id,
        num_classes=result.num_classes,
        fingerprint=file_sha256(out / MODEL_FILE),
        config=result.settings,
        metrics=training_metrics(result),
        parent=parent,
        notes={"trained_in": str(out.resolve())},
    )
    if not created:
        log.info("%s was already registered as %s", out, record.model_id)
    return record


def register_evaluation(
    registry: ModelRegistry, model_id: str, eval_dir: str | os.PathLike[str], evaluation: Evaluation
) -> ModelRecord:
    """Store an evaluation's metrics.json and PNGs with a model and its summary in the record."""
    files = [METRICS_FILE, *evaluation.plots.values()]
    summary: dict[str, Any] = {
        "version_id": evaluation.version_id,
        "split": evaluation.split,
        "examples": evaluation.examples,
        "top1": evaluation.top1,
        "top5": evaluation.top5,
    }
    if evaluation.leaky is not None:
        summary["leaky"] = {k: evaluation.leaky[k] for k in ("version_id", "top1", "top5", "leak_rate", "gap")}
    return registry.add_files(model_id, eval_dir, files, prefix=EVAL_PREFIX, metrics={"evaluation": summary})
