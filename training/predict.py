"""A model's predictions on a split of a CURATED version, and loading a saved model.

`predict_split` streams a split through a model (`data.CuratedInput`; per sample only its label
and top-k predictions are kept); training's warm-start report and `evaluate` both read them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from facescale.errors import ConfigError, NotFoundError
from facescale.storage import DatasetStore

from .data import CuratedInput
from .rundir import MODEL_FILE

TOP_K = 5


@dataclass(frozen=True)
class Predictions:
    """What a model predicted for every sample of a split (in the shards' order)."""

    labels: np.ndarray  # (N,) int32 true labels
    top: np.ndarray  # (N, k) int32 predicted labels, most probable first

    @property
    def predicted(self) -> np.ndarray:
        return self.top[:, 0]

    def accuracy(self, mask: np.ndarray | None = None) -> float | None:
        """Top-1 accuracy over the samples selected by ``mask`` (None when there are none)."""
        chosen = self.predicted == self.labels
        if mask is not None:
            chosen = chosen[mask]
        return float(chosen.mean()) if chosen.size else None


def predict_split(
    model: keras.Model, store: DatasetStore, version_id: str, split: str = "test", batch_size: int = 64
) -> Predictions:
    """Stream one split through ``model``; keep each sample's label and top-k predictions.

    Args:
        model: a classifier made by `model.build_model` (or loaded from ``model.keras``).
        store: the dataset store.
        version_id: the CURATED version.
        split: ``train``, ``val`` or ``test``.
        batch_size: samples per prediction batch.

    Returns:
        The `Predictions`, in the shards' order.
    """
    image_size = int(model.input_shape[1])
    data = CuratedInput(store, version_id, split, image_size)
    if data.num_examples == 0:
        raise ConfigError(f"dataset version {version_id} has no {split} samples to evaluate on")
    k = min(TOP_K, int(model.output_shape[-1]))
    labels, tops = [], []
    for images, batch_labels in data.dataset(batch_size):
        probabilities = np.asarray(model.predict_on_batch(images))
        tops.append(np.argsort(-probabilities, axis=1, kind="stable")[:, :k].astype(np.int32))
        labels.append(batch_labels.numpy())
    return Predictions(np.concatenate(labels), np.concatenate(tops))


def accuracy_on_labels(predictions: Predictions, labels: Sequence[int]) -> tuple[float | None, int]:
    """Top-1 accuracy over the samples whose true label is in ``labels``, and how many there are."""
    mask = np.isin(predictions.labels, np.asarray(list(labels), dtype=np.int64))
    return predictions.accuracy(mask), int(mask.sum())


def load_model(model_dir: str | os.PathLike[str]) -> keras.Model:
    """The model saved in ``<model_dir>/model.keras`` (uncompiled, float32)."""
    from . import model as _layers  # noqa: F401  (registers the custom layers a saved model may hold)

    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise NotFoundError(f"no model at {path}")
    return keras.saving.load_model(path, compile=False)

