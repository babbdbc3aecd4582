"""The training stage: a CURATED version -> a trained Inception V3 in a directory, resumable.

``train()`` is four steps, each its own function: `plan.plan_run` (pure: batches, steps and
the run's fingerprint), `build` (the compiled model and the callbacks whose state a
checkpoint keeps), `fit` (the epochs) and `export_model` (model.keras + labels.json).

``train()`` streams the version's train split (`data.CuratedInput`), builds the model
(`model.build_model`) under ``tf.distribute.MirroredStrategy`` (every visible GPU, else
the CPU; ``settings.batch_size`` is per replica), or under ``MultiWorkerMirroredStrategy``
when ``TF_CONFIG`` names a cluster (see Multi-node below), and fits it with:

- `callbacks.ThresholdStop`: stop once ``settings.stop_metric`` reaches
  ``settings.stop_threshold``, not before ``settings.min_epochs``; ``max_epochs`` bounds it;
- ``ModelCheckpoint(save_best_only)`` -> ``best.weights.h5``, loaded at the end (best
  weights; a weights file because loading a 260 MB ``.keras`` archive takes 5x longer);
- ``CSVLogger`` -> ``history.csv`` and TensorBoard event files -> ``tensorboard/``;
- `callbacks.EpochCheckpoint` -> ``backup/``: the whole state after every epoch, atomically.

Resuming: rerun ``train()`` with the same arguments and output directory. It restores the
last committed epoch (weights, optimizer, callback states), truncates ``history.csv`` to
it, and feeds the batches an uninterrupted run would have seen from there on (the input
order is a function of ``(seed, epoch)``), so the result matches an uninterrupted run
within floating-point tolerance. A finished directory is returned as is. A rerun with other
data or settings is refused (`ConflictError`): train into a new directory instead.

Warm start (``warm_start=``): the previous model's backbone and embedding are copied and
its head grown by stable labels (`model.grow_from`); the report of both models on the old
identities' test samples lands in ``training.json``.

Multi-node: every worker runs the same call with its own ``TF_CONFIG``; worker i streams
every n-th sample of each epoch's order (``distribute_datasets_from_function``), batches
per replica; steps per epoch (and validation steps) are the smallest shard's, equal on all
workers. Only the chief (the ``chief`` task, else worker 0) writes the artifacts; the others
keep their own checkpoint state in ``<out_dir>/worker-<i>/`` for a resume. Limits: the
storage root must be reachable from every worker; synchronous (the slowest worker sets the
pace; a lost worker stops the job: restart all to resume); Keras 3's ``fit`` needs two
patches under this strategy (`_multi_worker_fixes`, keras-team/keras#20585).

Output directory::

    model.keras      the best model, float32, without optimizer state (for serving)
    labels.json      version id, class count, label -> {name, slug}
    training.json    the TrainResult (its presence = finished)
    history.csv      per-epoch metrics of the whole run (across resumes)
    best.weights.h5  weights of the best epoch so far (with optimizer state)
    tensorboard/     TensorBoard event files
    backup/          state.json + the last epoch's weights (weights removed when finished)
    worker-<i>/      multi-worker only: a non-chief worker's own state (no artifacts)
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from facescale.config import TrainingSettings
from facescale.errors import ConfigError, ConflictError
from facescale.storage import CropStore, DatasetStore
from facescale.storage.fs import local_atomic_path

from .callbacks import EpochCheckpoint, LogEpochs, ThresholdStop, tensorboard, write_json
from .data import CuratedInput, ExtraInput, VersionInfo, with_extra
from .model import CosFaceLoss, build_model, distillation_model, grow_from, use_mixed_precision
from .plan import TrainingPlan, plan_run, upgraded
from .predict import accuracy_on_labels, predict_split
from .rundir import (
    BACKUP_DIR,
    BEST_FILE,
    HISTORY_FILE,
    LABELS_FILE,
    MODEL_FILE,
    RESULT_FILE,
    TENSORBOARD_DIR,
    TrainResult,
    file_sha256,
)
from .teacher import extra_crops, sources_by_split, teacher_embeddings

log = logging.getLogger(__name__)

METRICS = ("loss", "accuracy", "top5_accuracy")


@dataclass(frozen=True)
class Cluster:
    """Where this process stands in a multi-worker run (one worker, the chief, otherwise)."""

    workers: int = 1
    index: int = 0  # this worker's input shard
    chief: bool = True  # writes the artifacts

    @property
    def multi(self) -> bool:
        return self.workers > 1


def cluster_from_env() -> Cluster:
    """The cluster ``TF_CONFIG`` describes, or a single worker when it is unset.

    ``TF_CONFIG`` is TensorFlow's JSON: ``{"cluster": {"worker": ["host:port", ...]},
    "task": {"type": "worker", "index": i}}`` (a ``chief`` job may be listed too). The
    chief is the ``chief`` task, or worker 0 when there is none.
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return Cluster()
    try:
        config = json.loads(raw)
        jobs = config.get("cluster", {})
        task = config.get("task", {})
        members = [("chief", i) for i in range(len(jobs.get("chief", [])))]
        members += [("worker", i) for i in range(len(jobs.get("worker", [])))]
        me = (task["type"], int(task["index"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"TF_CONFIG is not a valid cluster description: {exc}") from exc
    if me not in members:
        raise ConfigError(f"TF_CONFIG: task {me[0]}:{me[1]} is not in its cluster ({len(members)} members)")
    return Cluster(workers=len(members), index=members.index(me), chief=members.index(me) == 0)


def make_strategy(devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """The distribution strategy: multi-worker when ``TF_CONFIG`` names a cluster, else mirrored.

    - ``TF_CONFIG`` set (and no ``devices``): ``MultiWorkerMirroredStrategy``, synchronous
      data parallelism across the cluster's processes (collective all-reduce over gRPC;
      NCCL between GPUs); every worker mirrors over its own visible GPUs (or its CPU).
      Create it before any other TensorFlow op runs in the process.
    - otherwise ``MirroredStrategy`` over ``devices``, by default every visible GPU (else
      the CPU).

    Args:
        devices: device names such as ``["/gpu:0", "/gpu:1"]`` or ``["/cpu:0", "/cpu:1"]``.

    Returns:
        The strategy; ``num_replicas_in_sync`` replicas each take ``batch_size`` examples.
    """
    if devices is None and cluster_from_env().multi:
        strategy: tf.distribute.Strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        log.info(
            "MultiWorkerMirroredStrategy: %d replica(s) in all; this is %s:%s on %s",
            strategy.num_replicas_in_sync, resolver.task_type, resolver.task_id,
            ", ".join(strategy.extended.worker_devices),
        )
        return strategy
    strategy = tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    log.info("MirroredStrategy: %d replica(s) on %s", strategy.num_replicas_in_sync,
             ", ".join(strategy.extended.worker_devices))
    return strategy


def make_deterministic() -> None:
    """Make this process's TensorFlow ops reproducible, run to run, as far as it can.

    Enables TensorFlow's op determinism (deterministic kernels; XLA auto-clustering off) and
    runs one op at a time (inter-op parallelism 1; each op still uses every core): measured
    here, ops running side by side on the CPU change low bits of the gradients, and a model
    trained from scratch amplifies them into different weights within a few steps. The
    thread count can only be set before TensorFlow initialises; when it already has, set
    ``TF_NUM_INTEROP_THREADS=1`` in the environment of the process instead.
    """
    tf.config.experimental.enable_op_determinism()
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        if os.environ.get("TF_NUM_INTEROP_THREADS") != "1":
            log.warning(
                "TensorFlow started before train(): inter-op parallelism stays as it is, so a resumed run "
                "may drift from an uninterrupted one (set TF_NUM_INTEROP_THREADS=1 to avoid it)"
            )


def train(
    store: DatasetStore,
    version_id: str,
    settings: TrainingSettings,
    out_dir: str | os.PathLike[str],
    *,
    max_steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    devices: Sequence[str] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = 0,
    warm_start: str | os.PathLike[str] | None = None,
    crops: CropStore | None = None,
) -> TrainResult:
    """Train the identity classifier on a CURATED version; resume if ``out_dir`` holds a run.

    Args:
        store: the dataset store.
        version_id: the CURATED version to train on (its train and val splits).
        settings: the ``training`` section of the configuration.
        out_dir: local directory for the model, logs and checkpoints.
        max_steps_per_epoch: cap on batches per epoch (bounded runs, tests); an epoch is
            otherwise one pass over the train split in full global batches.
        validation_steps: cap on validation batches per epoch (default: the whole split).
        devices: devices to mirror over (default: every GPU, else the CPU).
        callbacks: extra Keras callbacks (progress bars, ...), run before the checkpoint.
        verbose: passed to ``Model.fit`` (0: log one line per epoch instead).
        warm_start: a local directory holding a previous model (``model.keras`` and
            ``labels.json``, e.g. a registered model's files) to start from: its backbone
            and embedding are copied, its head rows are copied for the labels it had and
            the new identities' rows start fresh (`model.grow_from`). After training, the
            previous and the new model are both evaluated on the test samples of the
            previous model's identities; the report (``warm_start`` in the result) says
            whether the new model is at least as good on them.
        crops: the crop cache holding the photos' dlib embeddings, needed when
            ``settings.teacher`` is ``dlib`` (the leaky baseline trains on a scratch copy of a
            version and reads them from the version's own store's cache).

    ``settings.deterministic`` makes the input order and the ops reproducible
    (`make_deterministic`), so that a resumed run ends where an uninterrupted one does;
    False trades that for speed (mostly on GPUs). ``settings.shuffle_buffer`` is about how
    many samples are shuffled together (`data.CuratedInput`).

    Returns:
        The `TrainResult`; ``out_dir`` holds ``model.keras`` and ``labels.json``.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_monitor(settings.stop_metric)
    targets, extra_input = None, None
    if settings.teacher == "dlib":
        if crops is None:
            raise ConfigError("training.teacher is dlib, but no crop cache was given to read its embeddings from")
        sources = sources_by_split(store, version_id)
        extra = None
        if settings.teacher_extra:
            extra = extra_crops(crops, sources)
            if not len(extra):
                raise ConfigError(
                    "training.teacher_extra asks for extra crops, but the crop cache holds no usable crop beyond "
                    "this version's own photos (and those near its val and test photos): set it to 0"
                )
        wanted = sources.get("train", set()) | sources.get("val", set())
        targets = teacher_embeddings(crops, wanted, extra=extra)
        if extra is not None:
            extra_input = ExtraInput(extra.images, np.stack([targets[i] for i in extra.image_ids]), settings.image_size)
    train_input = CuratedInput(
        store, version_id, "train", settings.image_size, shuffle_buffer=settings.shuffle_buffer, teacher=targets
    )
    info = train_input.info
    val_input = None
    if info.split_counts.get("val", 0):
        val_input = CuratedInput(store, version_id, "val", settings.image_size, teacher=targets)
    elif settings.stop_metric.startswith("val_"):
        raise ConfigError(
            f"dataset version {version_id} has no val split, so training.stop_metric "
            f"{settings.stop_metric!r} cannot be measured: monitor a training metric instead"
        )

    if settings.deterministic:
        make_deterministic()
    cluster = cluster_from_env() if devices is None else Cluster()
    strategy = make_strategy(devices)  # first: a multi-worker strategy must precede other TF ops
    previous = _previous_model(Path(warm_start), info) if warm_start is not None else None
    mixed = use_mixed_precision(settings.mixed_precision)
    plan = plan_run(
        settings, version_id, train_examples=train_input.num_examples,
        val_examples=val_input.num_examples if val_input is not None else 0,
        replicas=strategy.num_replicas_in_sync, workers=cluster.workers, mixed_precision=mixed,
        max_steps_per_epoch=max_steps_per_epoch, validation_steps=validation_steps,
        warm_start=previous.fingerprint if previous is not None else None,
    )
    replicas, global_batch = plan.replicas, plan.global_batch
    steps, validation_steps = plan.steps, plan.validation_steps
    if not cluster.chief:  # only the chief writes the artifacts; a worker keeps its own state to resume
        out = out / f"worker-{cluster.index}"
        out.mkdir(parents=True, exist_ok=True)
    backup = out / BACKUP_DIR
    saved = EpochCheckpoint.load(backup, plan.fingerprint, upgrade=upgraded)
    if saved is not None and saved.finished and (out / RESULT_FILE).is_file():
        log.info("%s already holds a finished run: nothing to do", out)
        return TrainResult.load(out)
    resumed_from = saved.epoch if saved is not None else 0
    log.info(
        "training on %s: %d train / %d val examples, %d classes, %dx%d, global batch %d (%d x %d), "
        "%d steps/epoch, epochs %d..%d%s",
        version_id, train_input.num_examples, info.split_counts.get("val", 0), info.num_classes,
        settings.image_size, settings.image_size, global_batch, settings.batch_size, replicas, steps,
        resumed_from + 1, settings.max_epochs, ", mixed precision" if mixed else "",
    )

    keras.utils.set_random_seed(settings.seed)
    with strategy.scope():
        built = build(settings, info.num_classes, plan, out)
        model, stop = built.model, built.stop
        if saved is not None:
            built.checkpoint.restore(built.trainee, saved)
        elif previous is not None:
            grow_from(model, previous.model)
        if saved is None or not saved.finished:
            fit(
                built, plan, settings, strategy, train_input, val_input, out, resumed_from, callbacks, verbose,
                extra_input=extra_input,
            )
        fitted = time.perf_counter()
        if (out / BEST_FILE).is_file():
            built.trainee.load_weights(out / BEST_FILE)
    history = _read_history(out / HISTORY_FILE)
    best_epoch, best_value = _best(history.get(settings.stop_metric, []), stop.mode)
    epochs = len(next(iter(history.values()), []))
    if stop.stopped_epoch is not None:
        stopped_by: Literal["threshold", "max_epochs", "callback"] = "threshold"
    else:
        stopped_by = "max_epochs" if epochs >= settings.max_epochs else "callback"
    warm_report = None
    if cluster.chief:
        export = export_model(model, info, settings, mixed, out)
        if previous is not None:
            warm_report = _warm_start_report(store, version_id, previous, export)
    result = TrainResult(
        out_dir=out,
        version_id=version_id,
        num_classes=info.num_classes,
        epochs=epochs,
        stopped_by=stopped_by,
        monitor=settings.stop_metric,
        best_epoch=best_epoch,
        best_value=best_value,
        history=history,
        replicas=replicas,
        global_batch_size=global_batch,
        steps_per_epoch=steps,
        mixed_precision=mixed,
        resumed_from=resumed_from,
        seconds=round(time.perf_counter() - started, 3),
        settings=settings.model_dump(mode="json"),
        max_steps_per_epoch=max_steps_per_epoch,
        validation_steps=validation_steps,
        workers=cluster.workers,
        warm_start=warm_report,
    )
    write_json(out / RESULT_FILE, result.to_json())
    for weights in backup.glob("*.weights.h5"):  # finished: the model is in model.keras
        weights.unlink(missing_ok=True)
    log.info(
        "trained %d epoch(s) (%s); best %s = %s at epoch %s; model in %s (%.1f s after the last epoch)",
        epochs, stopped_by, settings.stop_metric,
        "n/a" if best_value is None else f"{best_value:.4f}", best_epoch, result.model_path,
        time.perf_counter() - fitted,
    )
    return result


@dataclass
class Built:
    """A compiled model and the callbacks whose state an epoch checkpoint keeps with its weights.

    ``model`` is the classifier (what is exported); ``trainee`` is what ``fit`` trains and the
    checkpoints save: the classifier itself, or with ``training.teacher`` its
    `model.distillation_model` (same weights, one more input and loss).
    """

    model: keras.Model
    stop: ThresholdStop
    best: keras.callbacks.ModelCheckpoint
    checkpoint: EpochCheckpoint
    trainee: keras.Model


def learning_rate(
    settings: TrainingSettings, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """``training.learning_rate``, or its schedule: linear warm-up from 0 over ``warmup_epochs``, then cosine
    decay to 0 at ``max_epochs`` (in optimizer steps, so a resumed run continues where it stopped)."""
    if settings.lr_schedule == "constant":
        return settings.learning_rate
    warmup = round(settings.warmup_epochs * steps_per_epoch)
    total = settings.max_epochs * steps_per_epoch
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(settings.learning_rate, total)
    return keras.optimizers.schedules.CosineDecay(
        0.0, total - warmup, warmup_target=settings.learning_rate, warmup_steps=warmup
    )


@keras.saving.register_keras_serializable(package="facescale")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against label-smoothed targets: ``1 - s`` on the label, ``s`` spread
    evenly over all classes (Keras' own sparse loss has no smoothing)."""

    def __init__(self, smoothing: float, name: str = "smoothed_sparse_crossentropy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        target = keras.ops.one_hot(labels, classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(target, y_pred, label_smoothing=self.smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "smoothing": self.smoothing}


def loss_of(settings: TrainingSettings) -> keras.losses.Loss:
    """The identity loss of ``training.head`` (and ``label_smoothing``)."""
    if settings.head == "cosface":
        return CosFaceLoss(settings.cosface_margin, settings.cosface_scale, settings.label_smoothing)
    if settings.label_smoothing:
        return SmoothedSparseCrossentropy(settings.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def build(settings: TrainingSettings, num_classes: int, plan: TrainingPlan, out: Path) -> Built:
    """In the strategy's scope: the model of ``settings`` compiled, its stop, best-weights and epoch checkpoint."""
    model = build_model(
        num_classes, settings.image_size, settings.weights, settings.embedding_dim,
        mixed_precision=settings.mixed_precision, batchnorm_momentum=settings.batchnorm_momentum,
        backbone=settings.backbone, head=settings.head, cosface_scale=settings.cosface_scale,
    )
    trainee = distillation_model(model, settings.teacher_weight) if settings.teacher == "dlib" else model
    trainee.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate(settings, plan.steps)),
        loss=loss_of(settings),
        # weighted: the unlabelled rows of training.teacher_extra (weight 0) count in no metric
        weighted_metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"),
        ],
    )
    stop = ThresholdStop(settings.stop_metric, settings.stop_threshold, settings.min_epochs)
    best = keras.callbacks.ModelCheckpoint(
        str(out / BEST_FILE), monitor=settings.stop_metric, mode=stop.mode, save_best_only=True,
        save_weights_only=True,
    )
    checkpoint = EpochCheckpoint(
        out / BACKUP_DIR, fingerprint=plan.fingerprint, stateful={"threshold_stop": stop, "best": _BestValue(best)}
    )
    return Built(model, stop, best, checkpoint, trainee)


def fit(
    built: Built,
    plan: TrainingPlan,
    settings: TrainingSettings,
    strategy: tf.distribute.Strategy,
    train_input: CuratedInput,
    val_input: CuratedInput | None,
    out: Path,
    resumed_from: int,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = 0,
    *,
    extra_input: ExtraInput | None = None,
) -> None:
    """Fit epochs ``resumed_from + 1 .. settings.max_epochs``, appending to history.csv, one checkpoint an epoch.

    ``extra_input``: ``settings.teacher_extra`` unlabelled crops appended to every batch (`data.with_extra`).
    """
    _truncate_history(out / HISTORY_FILE, resumed_from)
    multi = plan.workers > 1
    if multi:
        stream, validation = _worker_inputs(
            strategy, train_input, val_input, settings, plan.steps, resumed_from, plan.validation_steps,
            extra_input,
        )
    else:
        stream = train_input.epochs(
            plan.global_batch, plan.steps, start_epoch=resumed_from, end_epoch=settings.max_epochs,
            seed=settings.seed, deterministic=settings.deterministic,
        )
        if extra_input is not None:
            extra_stream = extra_input.epochs(
                settings.teacher_extra * plan.replicas, plan.steps, start_epoch=resumed_from,
                end_epoch=settings.max_epochs, seed=settings.seed,
            )
            stream = with_extra(stream, extra_stream)
        validation = val_input.dataset(plan.global_batch) if val_input is not None else None
    fixes = _multi_worker_fixes(built.trainee, strategy) if multi else contextlib.nullcontext()
    with fixes:
        built.trainee.fit(
            stream,
            epochs=settings.max_epochs,
            initial_epoch=resumed_from,
            steps_per_epoch=plan.steps,
            validation_data=validation,
            validation_steps=plan.validation_steps,
            shuffle=False,
            verbose=verbose,
            callbacks=[
                built.stop,
                built.best,
                keras.callbacks.CSVLogger(str(out / HISTORY_FILE), append=resumed_from > 0),
                tensorboard(out / TENSORBOARD_DIR),
                LogEpochs(log),
                *callbacks,
                built.checkpoint,  # last: commits every other callback's decision for the epoch
            ],
        )


class _BestValue:
    """Carries ``ModelCheckpoint``'s best value across a resume (it saves only on improvement)."""

    def __init__(self, checkpoint: keras.callbacks.ModelCheckpoint) -> None:
        self.checkpoint = checkpoint

    def get_state(self) -> dict[str, Any]:
        best = self.checkpoint.best
        return {"best": None if best is None else float(best)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.checkpoint.best = state.get("best")


def _check_monitor(monitor: str) -> None:
    known = [*METRICS, *(f"val_{m}" for m in METRICS)]
    if monitor not in known:
        raise ConfigError(f"training.stop_metric {monitor!r} is not logged: use one of {', '.join(known)}")


def export_model(
    model: keras.Model, info: VersionInfo, settings: TrainingSettings, mixed: bool, out: Path
) -> keras.Model:
    """Write model.keras (float32, no optimizer state) and labels.json, each atomically; return that model."""
    if mixed:  # serve in float32 whatever the training precision: same layers, same weights
        export = build_model(
            info.num_classes, settings.image_size, embedding_dim=settings.embedding_dim, mixed_precision=False,
            batchnorm_momentum=settings.batchnorm_momentum, backbone=settings.backbone, head=settings.head,
            cosface_scale=settings.cosface_scale, name=model.name,
        )
        export.set_weights(model.get_weights())
    else:
        export = keras.Model(model.inputs, model.outputs, name=model.name)  # shares weights, uncompiled
    with local_atomic_path(out / MODEL_FILE) as tmp:
        export.save(tmp)
    labels = {
        "version_id": info.version_id,
        "num_classes": info.num_classes,
        "labels": {str(k): v for k, v in info.labels().items()},
    }
    write_json(out / LABELS_FILE, labels)
    return export


@dataclass(frozen=True)
class _Previous:
    """The model a warm start begins from."""

    directory: Path
    model: keras.Model
    labels: dict[int, dict[str, str]]
    version_id: str
    fingerprint: dict[str, Any]


def _previous_model(directory: Path, info: VersionInfo) -> _Previous:
    """Load the warm start's model and check that its labels mean the same identities here."""
    try:
        labels_doc = json.loads((directory / LABELS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"cannot warm-start from {directory}: no {LABELS_FILE} (not a model directory)") from None
    labels = {int(k): v for k, v in labels_doc["labels"].items()}
    current = info.labels()
    changed = [
        f"label {k}: {v['slug']} -> {current[k]['slug']}" for k, v in labels.items() if k in current and
        current[k]["slug"] != v["slug"]
    ]
    if changed:
        raise ConflictError(
            f"cannot warm-start from {directory}: its labels mean other identities ({'; '.join(changed)})"
        )
    if max(labels, default=-1) >= info.num_classes:
        raise ConflictError(
            f"cannot warm-start from {directory}: it has labels up to {max(labels)}, "
            f"the dataset version only {info.num_classes} classes"
        )
    model = keras.saving.load_model(directory / MODEL_FILE, compile=False)
    fingerprint = {"model_sha256": file_sha256(directory / MODEL_FILE), "version_id": labels_doc["version_id"]}
    return _Previous(directory, model, labels, labels_doc["version_id"], fingerprint)


def _warm_start_report(store: DatasetStore, version_id: str, previous: _Previous, model: keras.Model) -> dict[str, Any]:
    """Both models' top-1 accuracy on the test samples of the previous model's identities."""
    old = sorted(previous.labels)
    before = accuracy_on_labels(predict_split(previous.model, store, version_id, "test"), old)
    after = accuracy_on_labels(predict_split(model, store, version_id, "test"), old)
    report = {
        "previous_version_id": previous.version_id,
        "previous_model_sha256": previous.fingerprint["model_sha256"],
        "old_identities": len(old),
        "test_samples": before[1],
        "previous_accuracy": before[0],
        "new_accuracy": after[0],
        "at_least_as_good": None if before[0] is None or after[0] is None else bool(after[0] >= before[0]),
        "copied_classes": int(previous.model.output_shape[-1]),
        "new_classes": int(model.output_shape[-1] - previous.model.output_shape[-1]),
    }
    log.info(
        "warm start: on the %d test samples of the %d previous identities, accuracy %s -> %s (%s)",
        report["test_samples"], report["old_identities"], report["previous_accuracy"], report["new_accuracy"],
        "at least as good" if report["at_least_as_good"] else "WORSE" if report["at_least_as_good"] is False
        else "no test samples",
    )
    return report


@contextlib.contextmanager
def _multi_worker_fixes(model: keras.Model, strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Work around Keras 3's two breakages of ``fit`` under MultiWorkerMirroredStrategy.

    keras-team/keras#20585 (open; Keras 3.15 here): (1) before the first step, ``fit``
    reduces the first input batch as one nested structure, which the multi-worker
    strategy's ``reduce`` cannot take (it only needs the batch's shapes: the first local
    replica's tensors are used instead); (2) each step's scalar logs are reduced with
    ``axis=0``, which fails on scalars (they are averaged across replicas with ``axis=None``;
    the metrics are synchronised across workers, so every replica holds the same values).
    Both are patched only for this model and only while the block runs.
    """
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as keras_trainer

    original = keras_trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: tf.distribute.Strategy, reduction: str) -> Any:
        if reduction in ("auto", "mean"):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None)
                if isinstance(v, tf.distribute.DistributedValues) else v,
                values,
            )
        return original(values, strategy, reduction)

    def symbolic_build(self: keras.Model, iterator: Any = None, data_batch: Any = None) -> None:
        if iterator is not None:
            for _, _, it in iterator:
                first = next(it)
                data_batch = tree.map_structure(lambda v: strategy.experimental_local_results(v)[0], first)
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    keras_trainer.reduce_per_replica = reduce_per_replica
    model._maybe_symbolic_build = types.MethodType(symbolic_build, model)
    try:
        yield
    finally:
        keras_trainer.reduce_per_replica = original
        del model._maybe_symbolic_build


def _worker_inputs(
    strategy: tf.distribute.Strategy,
    train_input: CuratedInput,
    val_input: CuratedInput | None,
    settings: TrainingSettings,
    steps: int,
    start_epoch: int,
    validation_steps: int | None,
    extra_input: ExtraInput | None = None,
) -> tuple[Any, Any]:
    """Per-worker input for MultiWorkerMirroredStrategy: each worker reads its own shard.

    ``distribute_datasets_from_function`` calls the function once per worker with its
    pipeline id; the worker keeps every ``workers``-th sample of the (seeded) order, before
    decoding, and batches per replica. Nothing is re-batched or auto-sharded by tf.data.
    """
    local = len(strategy.extended.worker_devices)  # replicas on this worker

    def train_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        shard = (context.num_input_pipelines, context.input_pipeline_id)
        stream = train_input.epochs(
            settings.batch_size, steps * local, start_epoch=start_epoch, end_epoch=settings.max_epochs,
            seed=settings.seed, deterministic=settings.deterministic, shard=shard,
        )
        if extra_input is None:
            return stream
        extra = extra_input.epochs(
            settings.teacher_extra, steps * local, start_epoch=start_epoch, end_epoch=settings.max_epochs,
            seed=settings.seed, shard=shard,
        )
        return with_extra(stream, extra)

    def val_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        assert val_input is not None
        shard = (context.num_input_pipelines, context.input_pipeline_id)
        return val_input.dataset(settings.batch_size, drop_remainder=True, shard=shard).take(
            (validation_steps or 0) * local
        )

    stream = strategy.distribute_datasets_from_function(train_fn)
    validation = strategy.distribute_datasets_from_function(val_fn) if val_input is not None else None
    return stream, validation


def _truncate_history(path: Path, epochs: int) -> None:
    """Keep the header and the rows of the first ``epochs`` epochs (a killed run may have
    logged an epoch it never committed)."""
    if not path.is_file():
        return
    if epochs == 0:
        path.unlink()
        return
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    column = header.index("epoch") if "epoch" in header else None
    kept = [r for r in body if r and (column is None or int(float(r[column])) < epochs)]
    if len(kept) == len(body):
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([header, *kept])
    with local_atomic_path(path) as tmp:
        Path(tmp).write_text(buffer.getvalue(), encoding="utf-8")


def _read_history(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    keys = [k for k in (rows[0].keys() if rows else []) if k != "epoch"]
    return {k: [float(r[k]) for r in rows] for k in keys}


def _best(values: list[float], mode: str) -> tuple[int | None, float | None]:
    if not values:
        return None, None
    pick = max if mode == "max" else min
    value = pick(values)
    return values.index(value) + 1, value
