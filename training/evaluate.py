"""Evaluation of a trained model on a CURATED version's test split: metrics, plots, the seed's leaky split.

`evaluate` streams the split through the model (`data.CuratedInput`, never the whole split
in memory: per sample only its label and top-5 predictions are kept) and reports top-1,
top-5, per-identity accuracy and the most-confused pairs (true -> predicted) in
``metrics.json``, with PNG plots (matplotlib, Agg backend):

    curves.png        training curves from history.csv (loss, accuracy, top-5; train and val)
    confusion.png     confusion matrix of the identities in the most-confused pairs (row-normalised)
    filters.png       the backbone's first convolution's filters, as RGB patches
    feature_maps.png  one test image and the first channels of the first three activations

`leaky_baseline` reproduces the seed's mistake for comparison: the seed augmented every
photo first and split afterwards, at the sample level, so copies of one photo sat in both
train and test and its test accuracy measured recognition of photos it had trained on. It
pools every sample of the version (augmented copies included), re-splits them 70/20/10 by
sample (per identity, seeded; `make_leaky_version`), trains the same configuration on that
and evaluates on its test split. The report puts both accuracies side by side together with
the share of leaky test samples whose source photo also appears in train.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import keras
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from facescale.config import TrainingSettings
from facescale.errors import ConfigError, NotFoundError
from facescale.storage import DatasetStore, IdentityEntry, Location
from facescale.storage.schemas import Split

from .callbacks import write_json
from .data import CuratedInput, decode_image

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CURVES_PNG = "curves.png"
CONFUSION_PNG = "confusion.png"
FILTERS_PNG = "filters.png"
FEATURE_MAPS_PNG = "feature_maps.png"
PLOTS = (CURVES_PNG, CONFUSION_PNG, FILTERS_PNG, FEATURE_MAPS_PNG)
LEAKY_DIR = "leaky"
LEAKY_FRACTIONS: dict[Split, float] = {"train": 0.7, "val": 0.2, "test": 0.1}
TOP_K = 5
_Key = TypeVar("_Key")


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
                **_who(labels, label),
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
            "true": {"label": int(t), **_who(labels, t)},
            "predicted": {"label": int(p), **_who(labels, p)},
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
    labels_doc = _read_json(model_dir / "labels.json")
    labels = {int(k): v for k, v in labels_doc["labels"].items()}
    model = load_model(model_dir)
    predictions = predict_split(model, store, labels_doc["version_id"], split, batch_size)
    result = summarize(
        predictions, labels, version_id=labels_doc["version_id"], split=split,
        num_classes=int(labels_doc["num_classes"]), top_confused=top_confused,
    )
    written: dict[str, str] = {}
    if plots:
        history = model_dir / "history.csv"
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


def load_model(model_dir: str | os.PathLike[str]) -> keras.Model:
    """The model saved in ``<model_dir>/model.keras`` (uncompiled, float32)."""
    from . import model as _layers  # noqa: F401  (registers the custom layers a saved model may hold)

    path = Path(model_dir) / "model.keras"
    if not path.is_file():
        raise NotFoundError(f"no model at {path}")
    return keras.saving.load_model(path, compile=False)


# -- plots -----------------------------------------------------------------------------------
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
    names = [_who(labels, label)["slug"] for label in shown]
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


# -- the seed's leaky split ------------------------------------------------------------------
def make_leaky_version(
    source: DatasetStore,
    version_id: str,
    target: DatasetStore,
    *,
    seed: int = 0,
    fractions: Mapping[Split, float] = LEAKY_FRACTIONS,
) -> str:
    """Re-split every sample of a version at the sample level, as the seed did, into ``target``.

    All samples are pooled (augmented copies included) and, per identity, shuffled with
    ``seed`` and cut into train/val/test by ``fractions`` (exact counts, largest remainder).
    Copies of one source photo so land in different splits: the leak the seed had. Rows are
    streamed; only sample ids and labels are held.

    Args:
        source: the store holding ``version_id``.
        version_id: the honest (split-by-source) version.
        target: where to write the leaky version (a scratch store: it is not a dataset
            to train production models on).
        seed: the shuffle's seed.
        fractions: split -> share of each identity's samples.

    Returns:
        The leaky version's id (``<version_id>-leaky``); an existing one is reused.
    """
    leaky_id = f"{version_id}-leaky"
    if leaky_id in target.version_ids():
        return leaky_id
    manifest = source.get(version_id)
    ids = source.iter_batches(version_id, columns=["sample_id", "label"], batch_size=4096)
    table = pa.Table.from_batches(list(ids))
    sample_ids = np.array(table.column("sample_id").to_pylist(), dtype=object)
    labels = table.column("label").to_numpy()
    assigned: dict[str, Split] = {}
    rng = np.random.default_rng([seed, 0x1EA7])
    for label in sorted(set(labels.tolist())):
        members = sample_ids[labels == label]
        members = members[np.argsort(members)]  # order-independent of the shards
        members = members[rng.permutation(len(members))]
        counts = _exact_counts(len(members), fractions)
        start = 0
        for split, count in counts.items():
            for sample in members[start : start + count]:
                assigned[sample] = split
            start += count
    per_label: dict[int, Counter[Split]] = {}
    with target.create(leaky_id, parent=None, config={"leaky_resplit_of": version_id, "seed": seed}) as writer:
        for batch in source.iter_batches(version_id, batch_size=1024):
            table = pa.Table.from_batches([batch])
            splits = [assigned[s] for s in table.column("sample_id").to_pylist()]
            for label, split in zip(table.column("label").to_pylist(), splits, strict=True):
                per_label.setdefault(label, Counter())[split] += 1
            column = table.schema.get_field_index("split")
            split_field = table.schema.field(column)
            table = table.set_column(column, split_field, pa.array(splits, split_field.type))
            writer.write(table)
        entries = [
            IdentityEntry(name=i.name, slug=i.slug, label=i.label, counts=dict(per_label.get(i.label, {})),
                          sources=i.sources)
            for i in manifest.identities
        ]
        writer.commit(entries, notes={"leaky": f"samples of {version_id} re-split by sample (the seed's split)"})
    return leaky_id


def leak_rate(store: DatasetStore, version_id: str, split: str = "test") -> float:
    """Share of a split's samples whose source photo also has a sample in train."""
    table = pa.Table.from_batches(list(store.iter_batches(version_id, columns=["source_image_id", "split"])))
    train_sources = set(table.filter(pc.equal(table.column("split"), "train")).column("source_image_id").to_pylist())
    chosen = table.filter(pc.equal(table.column("split"), split)).column("source_image_id").to_pylist()
    return sum(s in train_sources for s in chosen) / len(chosen) if chosen else 0.0


def leaky_baseline(
    store: DatasetStore,
    version_id: str,
    settings: TrainingSettings,
    work_dir: str | os.PathLike[str],
    *,
    max_steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    batch_size: int = 64,
    verbose: int | str = 0,
) -> dict[str, Any]:
    """Train ``settings`` on the seed's leaky re-split of a version and evaluate it on its test split.

    Everything lives under ``work_dir`` (``data/``: the leaky version; ``train/``: the
    training output, resumable like any other). Rerunning returns the finished result.

    Args:
        store: the store holding the honest version.
        version_id: the honest version.
        settings: the training configuration (the one the honest model was trained with).
        work_dir: a local scratch directory.
        max_steps_per_epoch: the honest run's cap on steps per epoch, if any.
        validation_steps: the honest run's cap on validation batches, if any.
        batch_size: samples per prediction batch.
        verbose: passed to ``Model.fit``.

    Returns:
        ``version_id`` (the leaky version), ``top1``, ``top5``, ``examples`` (its test
        split), ``leak_rate`` (share of its test samples whose photo is also in its train
        split) and ``training`` (epochs, stopped_by, best value).
    """
    from .train import train  # train imports this module for warm-start reports

    work = Path(work_dir)
    scratch = DatasetStore(Location.from_uri(str(work / "data")))
    leaky_id = make_leaky_version(store, version_id, scratch, seed=settings.seed)
    result = train(
        scratch, leaky_id, settings, work / "train", max_steps_per_epoch=max_steps_per_epoch,
        validation_steps=validation_steps, verbose=verbose, teacher_store=store,
    )
    evaluation = evaluate(scratch, work / "train", work / "eval", batch_size=batch_size, plots=False)
    report: dict[str, Any] = {
        "version_id": leaky_id,
        "top1": evaluation.top1,
        "top5": evaluation.top5,
        "examples": evaluation.examples,
        "leak_rate": leak_rate(scratch, leaky_id),
        "training": {"epochs": result.epochs, "stopped_by": result.stopped_by, "best_value": result.best_value},
    }
    log.info(
        "leaky baseline on %s: top-1 %.4f (%.0f%% of its test samples' photos are in train)",
        leaky_id, report["top1"], 100 * report["leak_rate"],
    )
    return report


def accuracy_on_labels(predictions: Predictions, labels: Sequence[int]) -> tuple[float | None, int]:
    """Top-1 accuracy over the samples whose true label is in ``labels``, and how many there are."""
    mask = np.isin(predictions.labels, np.asarray(list(labels), dtype=np.int64))
    return predictions.accuracy(mask), int(mask.sum())


def _exact_counts(n: int, fractions: Mapping[_Key, float]) -> dict[_Key, int]:
    """Split ``n`` by ``fractions`` into integers summing to ``n`` (largest remainder)."""
    total = sum(fractions.values())
    raw = {k: n * v / total for k, v in fractions.items()}
    counts = {k: math.floor(v) for k, v in raw.items()}
    rest = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], list(raw).index(k)))[:rest]:
        counts[k] += 1
    return counts


def _who(labels: Mapping[int, Mapping[str, str]], label: int) -> dict[str, str]:
    entry = labels.get(int(label))
    if entry is None:  # a label the version does not hold (a removed identity's reserved slot)
        return {"name": f"(label {label})", "slug": f"label-{label}"}
    return {"name": entry["name"], "slug": entry["slug"]}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"not found: {path} (not a finished training output?)") from None


def _flat_layers(model: keras.Model) -> list[keras.layers.Layer]:
    found: list[keras.layers.Layer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_flat_layers(layer))
        else:
            found.append(layer)
    return found
