"""Inception V3 classifier: shapes at the smallest input, the embedding, weights files, precision."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from facescale.errors import ConfigError
from facescale.training.model import (
    BACKBONE_LAYER,
    EMBEDDING_LAYER,
    LOGITS_LAYER,
    OUTPUT_LAYER,
    CosineLogits,
    build_model,
    embedding_model,
    grow_from,
    use_mixed_precision,
)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model(6, image_size=75, embedding_dim=16)


def _images(n: int = 3, size: int = 75) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, size, size, 3)).astype("float32")


def test_builds_at_75_px_with_a_float32_softmax_head(model: keras.Model) -> None:
    assert model.input_shape == (None, 75, 75, 3)
    assert model.output_shape == (None, 6)
    assert model.get_layer(BACKBONE_LAYER).output_shape == (None, 2048)
    assert model.get_layer(EMBEDDING_LAYER).output.shape == (None, 16)
    probabilities = model.predict(_images(), verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_embedding_model_is_l2_normalised_and_shares_weights(model: keras.Model) -> None:
    embed = embedding_model(model)
    assert embed.output_shape == (None, 16)
    vectors = embed.predict(_images(), verbose=0)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert embed.get_layer(BACKBONE_LAYER) is model.get_layer(BACKBONE_LAYER)


def test_backbone_starts_from_a_local_weights_file(model: keras.Model, tmp_path: Path) -> None:
    path = tmp_path / "backbone.weights.h5"
    model.get_layer(BACKBONE_LAYER).save_weights(path)
    keras.utils.set_random_seed(1)  # a different initialisation, then overwritten by the file
    warm = build_model(3, image_size=75, weights=path, embedding_dim=8)
    for mine, theirs in zip(
        warm.get_layer(BACKBONE_LAYER).get_weights(), model.get_layer(BACKBONE_LAYER).get_weights(), strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)
    assert warm.output_shape == (None, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 74}, "at least 75"),
        ({"weights": "/nonexistent/inception.h5"}, "weights file not found"),
        ({"weights": "imagenet"}, "download"),
        ({"num_classes": 0}, "num_classes"),
        ({"batchnorm_momentum": 1.0}, "batchnorm_momentum"),
        ({"backbone": "resnet50"}, "inception_v3, tiny"),
        ({"backbone": "tiny", "image_size": 8}, "at least 16 for the tiny backbone"),
        ({"backbone": "tiny", "weights": "/some/inception.h5"}, "starts from scratch"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict, message: str) -> None:
    arguments = {"num_classes": 3, "image_size": 75} | kwargs
    with pytest.raises(ConfigError, match=message):
        build_model(**arguments)


def test_mixed_precision_keeps_a_float32_output_and_restores_the_policy() -> None:
    assert use_mixed_precision("auto") is False  # no GPU on the test machine
    assert use_mixed_precision("on") and not use_mixed_precision("off")
    mixed = build_model(4, image_size=75, embedding_dim=8, mixed_precision="on")
    assert mixed.get_layer("logits").compute_dtype == "float16"
    assert mixed.get_layer(OUTPUT_LAYER).compute_dtype == "float32"
    assert mixed.get_layer("logits").kernel.dtype == "float32"  # variables stay float32
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ConfigError, match="auto, on, off or bfloat16"):
        use_mixed_precision("sometimes")  # type: ignore[arg-type]
    bf16 = build_model(4, image_size=32, embedding_dim=8, mixed_precision="bfloat16", backbone="tiny")
    assert bf16.get_layer("logits").compute_dtype == "bfloat16" and use_mixed_precision("bfloat16")
    assert bf16.predict(_images(size=32), verbose=0).dtype == np.float32
    assert keras.config.dtype_policy().name == "float32"


def _bn_momenta(model: keras.Model) -> set[float]:
    layers = [*model.get_layer(BACKBONE_LAYER).layers, *model.layers]
    return {layer.momentum for layer in layers if isinstance(layer, keras.layers.BatchNormalization)}


def test_batchnorm_momentum_reaches_every_layer_and_the_saved_model(model: keras.Model, tmp_path: Path) -> None:
    assert _bn_momenta(model) == {0.99}  # Inception V3's own value by default
    fast = build_model(3, image_size=75, embedding_dim=8, batchnorm_momentum=0.9)
    assert _bn_momenta(fast) == {0.9}
    images = _images(4)
    fast.get_layer(EMBEDDING_LAYER)(np.ones((4, 8), "float32"), training=True)  # one training-mode update
    layer = fast.get_layer(EMBEDDING_LAYER)
    assert np.allclose(keras.ops.convert_to_numpy(layer.moving_mean), 0.1)  # 0.9 * 0 + 0.1 * 1
    fast.save(tmp_path / "fast.keras")
    loaded = keras.models.load_model(tmp_path / "fast.keras")
    assert _bn_momenta(loaded) == {0.9}
    assert np.allclose(loaded.predict(images, verbose=0), fast.predict(images, verbose=0), atol=1e-5)


def test_the_tiny_backbone_keeps_the_layer_contract_at_a_fraction_of_the_size(
    model: keras.Model, tmp_path: Path
) -> None:
    tiny = build_model(6, image_size=32, embedding_dim=16, backbone="tiny", batchnorm_momentum=0.9)
    assert tiny.name == "facescale_tiny" and model.name == "facescale_inception_v3"
    assert tiny.get_layer(BACKBONE_LAYER).output_shape == (None, 64)
    assert tiny.count_params() < 50_000 < 20_000_000 < model.count_params()
    assert _bn_momenta(tiny) == {0.9}
    vectors = embedding_model(tiny).predict(_images(size=32), verbose=0)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    tiny.save(tmp_path / "tiny.keras")
    loaded = keras.models.load_model(tmp_path / "tiny.keras")
    np.testing.assert_allclose(loaded.predict(_images(size=32), verbose=0), tiny.predict(_images(size=32), verbose=0))
    # warm start copies between models of one backbone, and refuses another's
    grown = build_model(8, image_size=32, embedding_dim=16, backbone="tiny")
    assert grow_from(grown, tiny) == {"copied_classes": 6, "new_classes": 2}
    other = build_model(8, image_size=75, embedding_dim=16, backbone="tiny")
    grow_from(other, tiny)  # convolutions and pooling take any input size
    with pytest.raises(ConfigError, match="cannot warm-start from facescale_inception_v3: layer 'backbone' differs"):
        grow_from(other, model)


def test_the_cosine_head_scores_scaled_cosines_and_survives_saving_and_warm_start(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    cos = build_model(5, image_size=32, embedding_dim=16, backbone="tiny", head="cosface", cosface_scale=10.0)
    head = cos.get_layer(LOGITS_LAYER)
    assert isinstance(head, CosineLogits) and len(head.get_weights()) == 1  # centres only, no bias
    images = _images(size=32)
    logits = keras.Model(cos.inputs, head.output).predict(images, verbose=0)
    embedding = keras.Model(cos.inputs, cos.get_layer(EMBEDDING_LAYER).output).predict(images, verbose=0)
    centres = head.get_weights()[0]
    expected = 10.0 * (embedding / np.linalg.norm(embedding, axis=1, keepdims=True)) @ (
        centres / np.linalg.norm(centres, axis=0, keepdims=True)
    )
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(logits).max() <= 10.0 + 1e-4
    cos.save(tmp_path / "cos.keras")
    loaded = keras.models.load_model(tmp_path / "cos.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), cos.predict(images, verbose=0), rtol=1e-5)
    grown = build_model(7, image_size=32, embedding_dim=16, backbone="tiny", head="cosface")
    assert grow_from(grown, cos) == {"copied_classes": 5, "new_classes": 2}
    np.testing.assert_array_equal(grown.get_layer(LOGITS_LAYER).get_weights()[0][:, :5], centres)
    dense = build_model(7, image_size=32, embedding_dim=16, backbone="tiny")
    with pytest.raises(ConfigError, match="cannot warm-start a Dense head from a CosineLogits one"):
        grow_from(dense, cos)

