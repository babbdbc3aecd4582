"""The recipe's levers: the learning-rate schedule (warm-up, cosine decay) and label smoothing."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from facescale.config import TrainingSettings
from facescale.training.train import SmoothedSparseCrossentropy, learning_rate


def test_the_constant_rate_is_the_setting() -> None:
    assert learning_rate(TrainingSettings(learning_rate=3e-4), 100) == 3e-4


def test_warm_up_then_cosine_decay_to_zero_at_max_epochs() -> None:
    settings = TrainingSettings(learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=1, max_epochs=5)
    schedule = learning_rate(settings, steps_per_epoch=10)
    at = {step: float(schedule(step)) for step in (0, 5, 10, 30, 50)}
    assert at[0] == 0.0 and at[5] == pytest.approx(5e-4)  # linear warm-up over the first epoch
    assert at[10] == pytest.approx(1e-3)  # the peak when warm-up ends
    assert at[30] == pytest.approx(5e-4, rel=1e-3)  # half-way through the 40 decay steps: cos(pi / 2)
    assert at[50] == pytest.approx(0.0, abs=1e-9)
    no_warmup = learning_rate(settings.model_copy(update={"warmup_epochs": 0.0}), 10)
    assert float(no_warmup(0)) == pytest.approx(1e-3)


def test_warm_up_needs_the_cosine_schedule_and_fewer_epochs() -> None:
    with pytest.raises(ValueError, match="lr_schedule: cosine"):
        TrainingSettings(warmup_epochs=1)
    with pytest.raises(ValueError, match="below max_epochs"):
        TrainingSettings(lr_schedule="cosine", warmup_epochs=3, max_epochs=3)


def test_smoothed_loss_is_cross_entropy_against_smoothed_targets() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    labels = np.array([0, 2])
    loss = float(SmoothedSparseCrossentropy(0.3)(labels, probabilities))
    targets = np.full((2, 3), 0.1) + 0.7 * np.eye(3)[labels]  # 1 - 0.3 on the label, 0.3 / 3 everywhere
    assert loss == pytest.approx(float(np.mean(-(targets * np.log(probabilities)).sum(axis=1))), rel=1e-5)
    plain = float(keras.losses.SparseCategoricalCrossentropy()(labels, probabilities))
    assert float(SmoothedSparseCrossentropy(0.0)(labels, probabilities)) == pytest.approx(plain, rel=1e-5)
    again = keras.losses.deserialize(keras.losses.serialize(SmoothedSparseCrossentropy(0.1)))
    assert again.smoothing == 0.1
