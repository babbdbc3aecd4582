"""The evaluation's PNG plots (matplotlib, Agg backend): curves, confusion, filters, feature maps.

    curves.png        training curves from history.csv (loss, accuracy, top-5; train and val)
    confusion.png     confusion matrix of the identities in the most-confused pairs (row-normalised)
    filters.png       the backbone's first convolution's filters, as RGB patches
    feature_maps.png  one test image and the first channels of the first three activations
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from facescale.errors import ConfigError
from facescale.storage import DatasetStore

from .data import decode_image
from .predict import Predictions
from .rundir import who


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history_csv: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Loss, accuracy and top-5 accuracy per epoch (train and val) from Keras' CSV history."""
    with open(history_csv, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    metrics = [m for m in ("loss", "accuracy", "top5_accuracy") if rows and m in rows[0]]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(4.5 * max(1, len(metrics)), 3.5), squeeze=False)
    epochs = [int(float(r["epoch"])) + 1 for r in rows]
    for ax, metric in zip(axes[0], metrics, strict=False):
        ax.plot(epochs, [float(r[metric]) for r in rows], marker="o", label="train")
        if f"val_{metric}" in rows[0]:
            ax.plot(epochs, [float(r[f"val_{metric}"]) for r in rows], marker="o", label="val")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        ax.grid(alpha=0.3)
    _save(fig, path)


def plot_confusion(
    predictions: Predictions,
    labels: Mapping[int, Mapping[str, str]],
    path: str | os.PathLike[str],
    max_identities: int = 20,
) -> list[int]:
    """Row-normalised confusion matrix of the identities most involved in confusions.

    Returns:
        The labels shown, in order.
    """
    y, p = predictions.labels, predictions.predicted
    wrong = Counter(y[p != y].tolist()) + Counter(p[p != y].tolist())
    shown = [label for label, _ in wrong.most_common(max_identities)]
    for label in sorted(set(y.tolist())):  # fill up with the others (a perfect model still gets a plot)
        if len(shown) >= max_identities:
            break
        if label not in shown:
            shown.append(label)
    index = {label: i for i, label in enumerate(shown)}
    matrix = np.zeros((len(shown), len(shown)))
    for t, q in zip(y.tolist(), p.tolist(), strict=True):
        if t in index and q in index:
            matrix[index[t], index[q]] += 1
    totals = np.array([max(1, int((y == label).sum())) for label in shown])[:, None]
    plt = _pyplot()
    side = max(5.0, 2.5 + 0.35 * len(shown))
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(matrix / totals, cmap="Blues", vmin=0, vmax=1)
    names = [who(labels, label)["slug"] for label in shown]
    ax.set_xticks(range(len(shown)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(shown)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion: share of each true identity", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046)
    _save(fig, path)
    return shown


def first_conv(model: keras.Model) -> keras.layers.Conv2D:
    """The backbone's first convolution."""
    for layer in _flat_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            return layer
    raise ConfigError(f"model {model.name} has no convolution")


def plot_filters(model: keras.Model, path: str | os.PathLike[str]) -> int:
    """The first convolution's filters as RGB patches (each scaled to [0, 1] on its own).

    Returns:
        The number of filters drawn.
    """
    kernel = np.asarray(first_conv(model).kernel)  # (h, w, 3, n)
    count = kernel.shape[-1]
    columns = 8
    rows = math.ceil(count / columns)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 0.9), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < count:
            patch = kernel[..., i]
            low, high = patch.min(), patch.max()
            ax.imshow((patch - low) / (high - low + 1e-12), interpolation="nearest")
    fig.suptitle(f"first convolution: {count} filters {kernel.shape[0]}x{kernel.shape[1]}")
    _save(fig, path)
    return count


def feature_maps(model: keras.Model, image: np.ndarray, layers: int = 3) -> list[tuple[str, np.ndarray]]:
    """Outputs of the backbone's first ``layers`` activations for one model-ready image.

    Args:
        model: a model made by `model.build_model`.
        image: ``(S, S, 3)`` float32 in [-1, 1].
        layers: how many activations (after each of the first convolutions + batch norm).

    Returns:
        ``(layer name, (h, w, channels) array)`` pairs, in network order.
    """
    backbone = model.get_layer("backbone")
    chosen = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Activation)][:layers]
    probe = keras.Model(backbone.inputs, [layer.output for layer in chosen])
    outputs = probe(image[None].astype("float32"), training=False)
    return [(layer.name, np.asarray(out)[0]) for layer, out in zip(chosen, outputs, strict=True)]


def plot_feature_maps(
    model: keras.Model, image: np.ndarray, path: str | os.PathLike[str], layers: int = 3, channels: int = 8
) -> list[str]:
    """The input image and the first ``channels`` maps of each of the first ``layers`` activations.

    Returns:
        The layer names shown.
    """
    maps = feature_maps(model, image, layers)
    plt = _pyplot()
    fig, axes = plt.subplots(len(maps), channels + 1, figsize=((channels + 1) * 1.2, len(maps) * 1.3), squeeze=False)
    for row, (name, values) in enumerate(maps):
        first = axes[row][0]
        first.axis("off")
        if row == 0:
            first.imshow((image + 1.0) / 2.0)
            first.set_title("input", fontsize=7)
        for c in range(channels):
            ax = axes[row][c + 1]
            ax.axis("off")
            if c < values.shape[-1]:
                ax.imshow(values[..., c], cmap="viridis")
                if c == 0:
                    ax.set_title(f"{name} {values.shape[0]}x{values.shape[1]}", fontsize=7, loc="left")
    _save(fig, path)
    return [name for name, _ in maps]


def sample_image(
    store: DatasetStore, version_id: str, split: str = "test", image_size: int | None = None
) -> np.ndarray:
    """The first sample of a split, model-ready (``decode_image``), at the model's size or its own."""
    for batch in store.iter_batches(version_id, columns=["image", "split"], batch_size=64):
        splits = batch.column(1).to_pylist()
        if split in splits:
            data = batch.column(0)[splits.index(split)].as_py()
            if image_size is None:
                image_size = int(tf.io.extract_jpeg_shape(data)[0])
            return decode_image(tf.constant(data), image_size).numpy()
    raise ConfigError(f"dataset version {version_id} has no {split} samples")


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    from facescale.storage.fs import local_atomic_path

    plt = _pyplot()
    fig.tight_layout()
    with local_atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def _flat_layers(model: keras.Model) -> list[keras.layers.Layer]:
    found: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_flat_layers(layer))
        else:
            found.append(layer)
    return found

