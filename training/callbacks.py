"""Training callbacks Keras lacks: a threshold stop, an atomic resumable checkpoint, log lines.

Keras' own callbacks cover the rest (``ModelCheckpoint``, ``CSVLogger``, ``TensorBoard``).
Files are replaced atomically with storage's `local_atomic_path`.
Why not ``keras.callbacks.BackupAndRestore``: it writes the weights and then the epoch
number as two separate files (a kill between them resumes the wrong epoch), and it
restores no callback state, so a resumed run would forget the best value seen so far.
`EpochCheckpoint` writes one weights file per epoch under a new name and then commits a
small ``state.json`` naming it (atomic rename), with the state of every callback that
decides something from past epochs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import keras

from facescale.errors import ConflictError, ManifestError
from facescale.storage.fs import local_atomic_path

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_FORMAT = 1
WEIGHTS_PATTERN = "epoch-{epoch:05d}.weights.h5"


def _direction(monitor: str, mode: str) -> Literal["min", "max"]:
    if mode == "min":
        return "min"
    if mode == "max":
        return "max"
    if mode != "auto":
        raise ValueError(f"mode must be auto, min or max, not {mode!r}")
    return "min" if monitor.removeprefix("val_").endswith("loss") else "max"


class ThresholdStop(keras.callbacks.Callback):
    """Stop training once a metric reaches a threshold, but not before ``min_epochs`` epochs.

    Unlike ``EarlyStopping`` (which stops when a metric stops improving), this stops when
    the target is met: ``val_accuracy >= 0.97`` by default. Its decision depends only on
    the absolute epoch number, so a resumed run stops where an uninterrupted one would;
    `get_state` / `set_state` carry what it has seen across a resume.

    Args:
        monitor: the logged metric to watch (``val_accuracy``, ``val_loss``, ...).
        threshold: stop when the metric is >= this (<= for a ``min`` metric such as a loss).
        min_epochs: never stop before this many epochs have completed.
        mode: ``auto`` treats names ending in ``loss`` as ``min``, others as ``max``.
    """

    def __init__(
        self,
        monitor: str = "val_accuracy",
        threshold: float = 0.97,
        min_epochs: int = 1,
        mode: Literal["auto", "min", "max"] = "auto",
    ) -> None:
        super().__init__()
        if min_epochs < 0:
            raise ValueError(f"min_epochs must be >= 0, got {min_epochs}")
        self.monitor = monitor
        self.threshold = float(threshold)
        self.min_epochs = min_epochs
        self.mode = _direction(monitor, mode)
        self.stopped_epoch: int | None = None  # 0-based epoch at which the threshold was met
        self.value: float | None = None  # the metric's value then
        self._warned = False

    def reached(self, value: float) -> bool:
        """Whether ``value`` meets the threshold."""
        return value >= self.threshold if self.mode == "max" else value <= self.threshold

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        current = (logs or {}).get(self.monitor)
        if current is None:
            if not self._warned:
                log.warning(
                    "ThresholdStop: metric %r is not logged (have: %s); it will not stop training",
                    self.monitor, ", ".join(sorted(logs or {})),
                )
                self._warned = True
            return
        current = float(current)
        if epoch + 1 >= self.min_epochs and self.reached(current):
            self.stopped_epoch, self.value = epoch, current
            self.model.stop_training = True
            sign = ">=" if self.mode == "max" else "<="
            log.info(
                "epoch %d: %s = %.4f %s %.4f: stopping", epoch + 1, self.monitor, current, sign, self.threshold
            )

    def get_state(self) -> dict[str, Any]:
        """What must survive a resume (JSON-serialisable)."""
        return {"stopped_epoch": self.stopped_epoch, "value": self.value}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore what `get_state` returned."""
        self.stopped_epoch = state.get("stopped_epoch")
        self.value = state.get("value")


class Stateful(Protocol):
    """Anything whose state `EpochCheckpoint` saves and restores with the weights."""

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class SavedState:
    """The committed state of a training run after its last completed epoch."""

    directory: Path
    epoch: int  # epochs completed
    weights: str | None  # file name in ``directory``
    finished: bool  # no further epoch is to run (threshold met or max epochs done)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def weights_path(self) -> Path | None:
        return self.directory / self.weights if self.weights else None


class EpochCheckpoint(keras.callbacks.Callback):
    """Commit the whole training state after every epoch; a rerun continues from it.

    Put it last in the callback list, so the state it saves includes every other
    callback's decision for the epoch (a stop, a new best). Per epoch it writes
    ``epoch-NNNNN.weights.h5`` (model and optimizer variables) under a temporary name,
    renames it into place, then replaces ``state.json`` (epoch, weights file, finished flag,
    the run's fingerprint, callback states) the same way, and only then deletes the
    previous epoch's weights. A process killed at any point leaves the last committed
    epoch intact.

    Args:
        directory: where the weights and ``state.json`` live (created if missing).
        fingerprint: what defines the run (data, settings); a resume must match it.
        stateful: named objects whose ``get_state()`` is saved with each epoch.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fingerprint: Mapping[str, Any] | None = None,
        stateful: Mapping[str, Stateful] | None = None,
    ) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.fingerprint = dict(fingerprint or {})
        self.stateful = dict(stateful or {})

    # -- loading ---------------------------------------------------------------------------
    @staticmethod
    def load(
        directory: str | os.PathLike[str],
        fingerprint: Mapping[str, Any] | None = None,
        upgrade: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    ) -> SavedState | None:
        """The committed state in ``directory``, or None when no epoch was committed.

        Args:
            directory: the checkpoint directory.
            fingerprint: when given, the saved run's fingerprint must equal it.
            upgrade: applied to the saved fingerprint first (a run saved by an older release
                lacks the settings added since: `plan.upgraded`).

        Returns:
            The `SavedState`, or None.
        """
        path = Path(directory) / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            state = SavedState(
                directory=Path(directory),
                epoch=int(data["epoch"]),
                weights=data["weights"],
                finished=bool(data["finished"]),
                fingerprint=dict(data["fingerprint"]),
                states={k: dict(v) for k, v in data["states"].items()},
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"malformed training state {path}: {exc}") from exc
        if upgrade is not None:
            state = dataclasses.replace(state, fingerprint=upgrade(state.fingerprint))
        expected = _jsonable(fingerprint) if fingerprint is not None else state.fingerprint
        if expected != state.fingerprint:
            keys = set(state.fingerprint) | set(expected)
            changed = sorted(k for k in keys if state.fingerprint.get(k) != expected.get(k))
            raise ConflictError(
                f"{Path(directory).parent} holds a different training run (differs in: {', '.join(changed)}); "
                "resume it with the same data and settings, or train into a new directory"
            )
        return state

    def restore(self, model: keras.Model, saved: SavedState) -> None:
        """Load the saved weights (and optimizer state) into ``model`` and callback states.

        Call it after ``model.compile`` and inside the distribution strategy's scope.

        Args:
            model: the compiled model, as built for the saved run.
            saved: what `load` returned.
        """
        path = saved.weights_path
        if path is not None:
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)  # its variables must exist to load
            model.load_weights(path)
        for name, obj in self.stateful.items():
            if name in saved.states:
                obj.set_state(saved.states[name])
        log.info("resumed from %s after epoch %d", self.directory, saved.epoch)

    # -- saving ----------------------------------------------------------------------------
    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        done = epoch + 1
        finished = bool(self.model.stop_training) or done >= int(self.params.get("epochs") or done)
        self.save(done, finished)

    def save(self, epoch: int, finished: bool) -> None:
        """Commit the model's current weights as the state after ``epoch`` epochs."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = WEIGHTS_PATTERN.format(epoch=epoch)
        with local_atomic_path(self.directory / name) as tmp:
            self.model.save_weights(tmp)
        state = {
            "format": STATE_FORMAT,
            "epoch": epoch,
            "weights": name,
            "finished": finished,
            "fingerprint": _jsonable(self.fingerprint),
            "states": {k: _jsonable(v.get_state()) for k, v in self.stateful.items()},
        }
        write_json(self.directory / STATE_FILE, state)
        for stale in self.directory.glob("*.weights.h5"):
            if stale.name != name:
                stale.unlink(missing_ok=True)
        log.debug("checkpoint: epoch %d committed (%s)", epoch, "finished" if finished else "continuing")


def tensorboard(log_dir: str | os.PathLike[str]) -> keras.callbacks.Callback:
    """Keras' TensorBoard callback writing per-epoch scalars under ``log_dir`` (no graph).

    Args:
        log_dir: the TensorBoard log directory (``train/`` and ``validation/`` runs).

    Returns:
        The callback.
    """
    return keras.callbacks.TensorBoard(str(log_dir), write_graph=False)


class LogEpochs(keras.callbacks.Callback):
    """Log one line of metrics per epoch through `logging` (fit runs with ``verbose=0``).

    Args:
        logger: where to log (this module's logger by default).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__()
        self.logger = logger or log

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        shown = " ".join(f"{k}={float(v):.4f}" for k, v in sorted((logs or {}).items()) if _is_number(v))
        total = self.params.get("epochs")
        self.logger.info("epoch %d/%s: %s", epoch + 1, total, shown)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        # Marks where fit's own teardown begins (its input iterators are released after this).
        self.logger.debug("fit: every callback's training ended")


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Replace the local file ``path`` with ``data`` as indented JSON, atomically.

    Readers see the old or the new file, never half of one (`facescale.storage.fs.local_atomic_path`).
    """
    with local_atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _jsonable(value: Any) -> Any:
    """A JSON round trip: numpy scalars become floats, tuples lists (for comparisons too)."""
    return json.loads(json.dumps(value, default=float))
