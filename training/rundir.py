"""A training run's directory: the names of its files and the records read from it.

The lowest module of training/ (no TensorFlow, no Keras): `train` writes a run here, `evaluate`
adds its metrics, `artifacts` registers both, and each names the files and reads the records
(`TrainResult`, ``training.json``; `Evaluation`, ``metrics.json``) through this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# training output (`train`)
MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
RESULT_FILE = "training.json"
HISTORY_FILE = "history.csv"
BEST_FILE = "best.weights.h5"
TENSORBOARD_DIR = "tensorboard"
BACKUP_DIR = "backup"
# evaluation output (`evaluate`, in <run>/eval/)
METRICS_FILE = "metrics.json"
CURVES_PNG = "curves.png"
CONFUSION_PNG = "confusion.png"
FILTERS_PNG = "filters.png"
FEATURE_MAPS_PNG = "feature_maps.png"


@dataclass(frozen=True)
class TrainResult:
    """What a finished training run produced (also stored as ``training.json``)."""

    out_dir: Path
    version_id: str
    num_classes: int
    epochs: int  # epochs completed in all
    stopped_by: Literal["threshold", "max_epochs", "callback"]
    monitor: str
    best_epoch: int | None  # 1-based epoch whose weights model.keras holds
    best_value: float | None
    history: dict[str, list[float]] = field(default_factory=dict)
    replicas: int = 1
    global_batch_size: int = 0
    steps_per_epoch: int = 0
    mixed_precision: bool = False
    resumed_from: int = 0  # epochs already done when the last call started (0: fresh)
    seconds: float = 0.0  # wall time of the last call
    settings: dict[str, Any] = field(default_factory=dict)  # the TrainingSettings used
    max_steps_per_epoch: int | None = None  # the caps it ran under (a rerun of "the same config")
    validation_steps: int | None = None
    workers: int = 1  # processes trained together (MultiWorkerMirroredStrategy); 1 otherwise
    warm_start: dict[str, Any] | None = None  # the warm-start report (see `train`)

    @property
    def model_path(self) -> Path:
        return self.out_dir / MODEL_FILE

    @property
    def labels_path(self) -> Path:
        return self.out_dir / LABELS_FILE

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``out_dir`` is left out: the file lives in it)."""
        data = asdict(self)
        data.pop("out_dir")
        return data

    @classmethod
    def load(cls, out_dir: str | os.PathLike[str]) -> TrainResult:
        """Read ``training.json`` of a finished run in ``out_dir``."""
        data = json.loads((Path(out_dir) / RESULT_FILE).read_text(encoding="utf-8"))
        return cls(out_dir=Path(out_dir), **data)


@dataclass(frozen=True)
class Evaluation:
    """The metrics of one model on one split (also ``metrics.json``)."""

    version_id: str
    split: str
    examples: int
    num_classes: int
    top1: float
    top5: float
    per_identity: list[dict[str, Any]]  # label, name, slug, examples, correct, accuracy; worst first
    confused_pairs: list[dict[str, Any]]  # true / predicted (label, slug), count, share of the true identity
    plots: dict[str, str] = field(default_factory=dict)  # name -> file name in the output directory
    leaky: dict[str, Any] | None = None  # the seed's leaky split, when asked for

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a local file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def who(labels: Mapping[int, Mapping[str, str]], label: int) -> dict[str, str]:
    """``{"name", "slug"}`` of ``label`` in a run's ``labels.json`` labels (a placeholder for a label it lacks)."""
    entry = labels.get(int(label))
    if entry is None:  # a label the version does not hold (a removed identity's reserved slot)
        return {"name": f"(label {label})", "slug": f"label-{label}"}
    return {"name": entry["name"], "slug": entry["slug"]}
