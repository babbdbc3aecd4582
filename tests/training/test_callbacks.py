"""ThresholdStop and EpochCheckpoint on a tiny model (the real model is exercised in test_train)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from facescale.errors import ConflictError, ManifestError
from facescale.training.callbacks import STATE_FILE, EpochCheckpoint, ThresholdStop


class Script(keras.callbacks.Callback):
    """Puts scripted values of a metric into each epoch's logs (callbacks share the dict)."""

    def __init__(self, name: str, values: Sequence[float]) -> None:
        super().__init__()
        self.name, self.values = name, values

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        assert logs is not None
        logs[self.name] = self.values[epoch]  # type: ignore[index]


def _tiny() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _fit(model: keras.Model, epochs: int, callbacks: list, initial_epoch: int = 0) -> keras.callbacks.History:
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    y = np.arange(16) % 3
    return model.fit(
        x, y, batch_size=8, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=0, shuffle=False
    )


@pytest.mark.parametrize(
    ("values", "min_epochs", "epochs_run"),
    [
        ([0.5, 0.98, 0.99, 0.99, 0.99], 1, 2),  # reached at epoch 2
        ([0.5, 0.98, 0.99, 0.99, 0.99], 3, 3),  # reached earlier, but not before min_epochs
        ([0.97, 0.2, 0.2, 0.2, 0.2], 0, 1),  # ">=": the threshold itself counts
        ([0.5, 0.6, 0.7, 0.8, 0.9], 1, 5),  # never reached: max epochs
    ],
)
def test_threshold_stop_fires_at_the_threshold_after_min_epochs(
    values: list[float], min_epochs: int, epochs_run: int
) -> None:
    stop = ThresholdStop("val_score", threshold=0.97, min_epochs=min_epochs)
    history = _fit(_tiny(), 5, [Script("val_score", values), stop])
    assert len(history.history["loss"]) == epochs_run
    if epochs_run < 5:
        assert stop.stopped_epoch == epochs_run - 1 and stop.value == values[epochs_run - 1]
    else:
        assert stop.stopped_epoch is None


def test_threshold_stop_on_a_loss_stops_below_and_ignores_a_missing_metric() -> None:
    stop = ThresholdStop("val_loss", threshold=0.1)
    assert stop.mode == "min" and stop.reached(0.05) and not stop.reached(0.2)
    history = _fit(_tiny(), 4, [Script("val_loss", [0.5, 0.3, 0.09, 0.01]), stop])
    assert len(history.history["loss"]) == 3
    missing = ThresholdStop("val_accuracy")
    assert len(_fit(_tiny(), 2, [missing]).history["loss"]) == 2


def test_threshold_stop_state_round_trips() -> None:
    stop = ThresholdStop()
    stop.set_state({"stopped_epoch": 4, "value": 0.975})
    again = ThresholdStop()
    again.set_state(json.loads(json.dumps(stop.get_state())))
    assert (again.stopped_epoch, again.value) == (4, 0.975)


def test_epoch_checkpoint_commits_and_restores_weights_optimizer_and_states(tmp_path: Path) -> None:
    stop = ThresholdStop("val_score", threshold=0.97, min_epochs=1)
    model = _tiny()
    checkpoint = EpochCheckpoint(tmp_path, fingerprint={"run": 1}, stateful={"stop": stop})
    _fit(model, 5, [Script("val_score", [0.1, 0.99, 0.2, 0.2, 0.2]), stop, checkpoint])
    saved = EpochCheckpoint.load(tmp_path, {"run": 1})
    assert saved is not None
    assert (saved.epoch, saved.finished, saved.weights) == (2, True, "epoch-00002.weights.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-00002.weights.h5", STATE_FILE]
    assert saved.states == {"stop": {"stopped_epoch": 1, "value": 0.99}}

    fresh, fresh_stop = _tiny(), ThresholdStop("val_score")
    fresh.optimizer.build(fresh.trainable_variables)
    EpochCheckpoint(tmp_path, stateful={"stop": fresh_stop}).restore(fresh, saved)
    for mine, theirs in zip(fresh.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert int(fresh.optimizer.iterations) == int(model.optimizer.iterations) == 4
    assert fresh_stop.stopped_epoch == 1


def test_a_resumed_fit_continues_from_the_committed_epoch(tmp_path: Path) -> None:
    whole = _tiny()
    _fit(whole, 4, [])
    first = _tiny()
    _fit(first, 2, [EpochCheckpoint(tmp_path)])  # "killed" after epoch 2
    saved = EpochCheckpoint.load(tmp_path)
    assert saved is not None and saved.epoch == 2 and saved.finished  # 2 of 2 epochs
    second = _tiny()
    second.optimizer.build(second.trainable_variables)
    EpochCheckpoint(tmp_path).restore(second, saved)
    _fit(second, 4, [], initial_epoch=saved.epoch)
    for mine, theirs in zip(second.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_a_different_run_or_a_malformed_state_is_refused(tmp_path: Path) -> None:
    assert EpochCheckpoint.load(tmp_path) is None
    _fit(_tiny(), 1, [EpochCheckpoint(tmp_path, fingerprint={"version": "a", "lr": 0.001})])
    with pytest.raises(ConflictError, match="differs in: version"):
        EpochCheckpoint.load(tmp_path, {"version": "b", "lr": 0.001})
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(ManifestError, match="malformed training state"):
        EpochCheckpoint.load(tmp_path)
