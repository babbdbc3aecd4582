"""The recipe's levers: the learning-rate schedule (warm-up, cosine decay), label smoothing, the cosine margin."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from facescale.config import TrainingSettings
from facescale.training.model import CosFaceLoss, build_model
from facescale.training.train import SmoothedSparseCrossentropy, learning_rate, loss_of


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


def test_the_cosface_loss_is_the_cross_entropy_of_margined_logits() -> None:
    """From the probabilities alone: softmax's per-row constant cancels, so the loss equals the cross-entropy
    of the logits with ``scale * margin`` taken off the true class; margin 0 is plain cross-entropy."""
    rng = np.random.default_rng(0)
    scale, margin = 30.0, 0.2
    logits = scale * rng.uniform(-1, 1, (8, 5)).astype("float32")
    labels = rng.integers(0, 5, 8)
    probabilities = keras.ops.softmax(logits)
    margined = logits - scale * margin * np.eye(5, dtype="float32")[labels]
    expected = -np.log(np.exp(margined)[np.arange(8), labels] / np.exp(margined).sum(axis=1))
    loss = CosFaceLoss(margin, scale, reduction=None)(labels, probabilities)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss), expected, rtol=1e-4)
    plain = CosFaceLoss(0.0, scale, reduction=None)(labels, probabilities)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(reduction=None)(labels, probabilities)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(plain), keras.ops.convert_to_numpy(cross_entropy), rtol=1e-4)
    assert np.all(keras.ops.convert_to_numpy(loss) > keras.ops.convert_to_numpy(plain))



def test_the_head_setting_picks_the_loss() -> None:
    cosface = loss_of(TrainingSettings(head="cosface", cosface_margin=0.3, cosface_scale=16, label_smoothing=0.1))
    assert isinstance(cosface, CosFaceLoss) and (cosface.margin, cosface.scale, cosface.smoothing) == (0.3, 16, 0.1)
    assert isinstance(loss_of(TrainingSettings(label_smoothing=0.1)), SmoothedSparseCrossentropy)
    assert isinstance(loss_of(TrainingSettings()), keras.losses.SparseCategoricalCrossentropy)


def test_a_cosine_head_learns_through_the_margin_loss() -> None:
    """Mechanics, not face quality: the loss's gradient reaches the centres and the backbone through the
    probabilities, so a tiny model separates two classes of images it could not tell apart at the start."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 2
    images = (np.where(labels[:, None, None, None] == 1, 0.5, -0.5) + rng.normal(0, 0.3, (64, 32, 32, 3))).astype(
        "float32"
    )
    model = build_model(2, image_size=32, embedding_dim=8, backbone="tiny", head="cosface", cosface_scale=16.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CosFaceLoss(0.2, 16.0), metrics=["accuracy"])
    history = model.fit(images, labels, batch_size=16, epochs=8, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert float(np.mean(model.predict(images, verbose=0).argmax(axis=1) == labels)) == 1.0
