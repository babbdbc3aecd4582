"""A training run's plan, decided before TensorFlow builds anything: batches, steps and the run's fingerprint.

Pure (no TensorFlow, no I/O): `train.train` measures the split sizes, the replicas of its
strategy and the workers of its cluster, and `plan_run` turns them and the settings into
the global and per-worker batch, the steps per epoch and the validation steps, and the
fingerprint an epoch checkpoint must match for a run to resume from it (any change to
these, the settings or the warm start starts the run over, except where the run stops:
`STOP_SETTINGS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from facescale.config import TrainingSettings
from facescale.errors import ConfigError


@dataclass(frozen=True)
class TrainingPlan:
    """What one run does per epoch, and the fingerprint that identifies it."""

    version_id: str
    replicas: int  # replicas in sync (devices of every worker)
    workers: int  # processes of a multi-worker cluster (1: one machine)
    global_batch: int  # batch_size x replicas
    worker_batch: int  # each worker's share of the global batch
    steps: int  # batches per epoch
    validation_steps: int | None  # None: the whole val split
    mixed_precision: bool
    fingerprint: dict[str, Any]


#: Settings added after runs were saved without them, with the value such a run trained with: a saved
#: fingerprint missing one of them is read as having this value, so it still resumes after the upgrade.
LEGACY_SETTINGS: dict[str, Any] = {
    "head": "softmax", "cosface_margin": 0.2, "cosface_scale": 30.0, "teacher_extra": 0,
}


#: Settings that only decide when a run stops, not what an epoch computes: they stay out of the fingerprint,
#: so an unfinished run resumes under a new threshold or a new epoch bound (a long run's stop can be moved
#: once its curve is known); ``max_epochs`` too unless a cosine schedule is shaped by it. A finished run
#: stays finished: train on from it with a warm start.
STOP_SETTINGS = ("stop_threshold", "min_epochs")


def fingerprint_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a run (``model_dump`` JSON) that its epochs depend on: all but `STOP_SETTINGS`,
    and ``max_epochs`` when the learning rate is constant."""
    dropped = set(STOP_SETTINGS) | ({"max_epochs"} if settings.get("lr_schedule", "constant") == "constant" else set())
    return {k: v for k, v in settings.items() if k not in dropped}


def upgraded(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """A saved run's fingerprint with the settings it predates filled in (`LEGACY_SETTINGS`) and the stop
    settings older releases kept in it taken out (`fingerprint_settings`)."""
    out = dict(fingerprint)
    if isinstance(out.get("settings"), Mapping):
        out["settings"] = fingerprint_settings(LEGACY_SETTINGS | dict(out["settings"]))
    return out


def full_batches(examples: int, batch: int, shards: int = 1) -> int:
    """Whole batches of ``batch`` in one pass over the smallest of ``shards`` interleaved shards."""
    return (examples // shards if shards > 1 else examples) // batch


def plan_run(
    settings: TrainingSettings,
    version_id: str,
    *,
    train_examples: int,
    val_examples: int,
    replicas: int = 1,
    workers: int = 1,
    mixed_precision: bool = False,
    max_steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    warm_start: Mapping[str, Any] | None = None,
) -> TrainingPlan:
    """The plan of a run on ``version_id``; `ConfigError` when its splits cannot fill one global batch.

    Each worker streams its own shard of the split (every ``workers``-th sample) in batches
    of its share of the global batch, so an epoch is what the smallest shard holds, capped
    at ``max_steps_per_epoch``. On several workers every worker must run the same number
    of validation batches, so it is fixed to what the smallest val shard holds.
    ``warm_start`` is the previous model's fingerprint, when the run starts from one.
    """
    global_batch = settings.batch_size * replicas
    worker_batch = global_batch // workers
    available = full_batches(train_examples, worker_batch, workers)
    if available < 1:
        raise ConfigError(
            f"the train split of {version_id} has {train_examples} examples, fewer than one "
            f"global batch ({settings.batch_size} x {replicas} replicas): lower training.batch_size"
        )
    steps = min(available, max_steps_per_epoch) if max_steps_per_epoch else available
    if workers > 1 and val_examples:
        full = full_batches(val_examples, worker_batch, workers)
        if full < 1:
            raise ConfigError(f"the val split of {version_id} is smaller than one global batch per worker")
        validation_steps = min(validation_steps or full, full)  # equal on every worker
    fingerprint: dict[str, Any] = {
        "version_id": version_id,
        "settings": fingerprint_settings(settings.model_dump(mode="json")),
        "replicas": replicas,
        "global_batch_size": global_batch,
        "steps_per_epoch": steps,
        "validation_steps": validation_steps,
        "mixed_precision": mixed_precision,
    }
    if warm_start is not None:
        fingerprint["warm_start"] = dict(warm_start)
    if workers > 1:
        fingerprint["workers"] = workers
    return TrainingPlan(
        version_id, replicas, workers, global_batch, worker_batch, steps, validation_steps, mixed_precision,
        fingerprint,
    )
