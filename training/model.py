"""The identity classifier: Keras 3 Inception V3 backbone, a named embedding, a softmax head.

Layout (layer names are a contract: warm start, verification and visualisation use them)::

    input (S, S, 3) float32 in [-1, 1]           "image"
    -> Inception V3 without top, global average  "backbone" (a nested functional model)
       (or the tiny backbone, see below)
    -> Dense(embedding_dim)                      "embedding_dense"
    -> BatchNormalization                        "embedding"    the face embedding
    -> Dense(num_classes)                        "logits"
       (head="cosface": `CosineLogits`, scale x cosine to each class centre, float32)
    -> softmax, float32 even in mixed precision  "probabilities"

`embedding_model` gives the L2-normalised embedding for verification. Weights are never
downloaded: a backbone starts from scratch, or from a local Keras weights file.

``backbone="tiny"`` swaps Inception V3 (21.8 M parameters, about a minute of one core to
trace its training step) for three strided convolutions (about 25 k parameters, traced in
seconds) under the same layer names: everything around the backbone (input pipeline,
distribution, checkpoints and resume, warm start, export, serving) runs unchanged. It exists
for tests of those mechanics and for smoke runs; it is not a face model.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from facescale.errors import ConfigError
from facescale.storage.schemas import EMBEDDING_DIM

log = logging.getLogger(__name__)

MIN_IMAGE_SIZE = 75  # Inception V3's smallest input without its top
INPUT_LAYER = "image"
BACKBONE_LAYER = "backbone"
EMBEDDING_LAYER = "embedding"
LOGITS_LAYER = "logits"
OUTPUT_LAYER = "probabilities"
NORMALIZED_EMBEDDING_LAYER = "embedding_l2"
TEACHER_INPUT = "teacher_embedding"
DISTILLATION_LAYER = "distillation"

MixedPrecision = Literal["auto", "on", "off", "bfloat16"] | bool
Backbone = Literal["inception_v3", "tiny"]
Head = Literal["softmax", "cosface"]
BACKBONES: tuple[Backbone, ...] = ("inception_v3", "tiny")
TINY_MIN_IMAGE_SIZE = 16


def precision_policy(mode: MixedPrecision) -> str:
    """The Keras dtype policy of a mixed-precision setting.

    ``on`` (or True) computes in float16, ``bfloat16`` in bfloat16 (variables stay float32
    either way), ``off`` in float32; ``auto`` is float16 exactly when a GPU is visible.
    bfloat16 is never chosen by ``auto``: measured here (`bench/bench_train_precision.py`) it
    trains at 0.49x float32's rate on a CPU without AVX512_BF16 (emulated) and at 0.75x on
    one with AVX512_BF16 but no AMX; only a CPU with AMX may gain (rerun the bench there).

    Returns:
        ``"float32"``, ``"mixed_float16"`` or ``"mixed_bfloat16"``.
    """
    if isinstance(mode, bool):
        return "mixed_float16" if mode else "float32"
    if mode == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    policies = {"on": "mixed_float16", "off": "float32", "bfloat16": "mixed_bfloat16"}
    if mode not in policies:
        raise ConfigError(f"mixed_precision must be auto, on, off or bfloat16, not {mode!r}")
    return policies[mode]


def use_mixed_precision(mode: MixedPrecision) -> bool:
    """Whether a mixed-precision setting computes in a 16-bit type (see `precision_policy`)."""
    return precision_policy(mode) != "float32"


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under the global dtype policy ``name``, then restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(
    num_classes: int,
    image_size: int = 96,
    weights: str | os.PathLike[str] | None = None,
    embedding_dim: int = 128,
    *,
    mixed_precision: MixedPrecision = "off",
    batchnorm_momentum: float | None = None,
    backbone: Backbone = "inception_v3",
    head: Head = "softmax",
    cosface_scale: float = 30.0,
    name: str | None = None,
) -> keras.Model:
    """Build the identity classifier (uncompiled): Inception V3 unless ``backbone`` says otherwise.

    Build it inside ``strategy.scope()`` to distribute its variables.

    Args:
        num_classes: size of the softmax head (largest label + 1).
        image_size: side of the square input, at least 75.
        weights: optional local Keras weights file for the backbone (e.g. Inception V3
            ``..._notop.h5``); from scratch when None. Nothing is ever downloaded.
        embedding_dim: width of the embedding layer.
        mixed_precision: ``"auto"`` (float16 iff a GPU is visible), ``"on"`` (float16),
            ``"bfloat16"``, ``"off"`` or a bool (see `precision_policy`).
        batchnorm_momentum: momentum of every BatchNormalization layer's moving statistics
            (what inference uses); None keeps Keras' Inception V3 value, 0.99. A short run
            from scratch wants less (0.9, PyTorch's default): with 0.99 the statistics
            average the last ~100 steps and, in the first hundreds of steps, still their
            initial values, so inference sees other activations than training did.
        backbone: ``"inception_v3"``, or ``"tiny"`` for tests of the training mechanics
            (see the module docstring); ``weights`` apply to Inception V3 only.
        head: ``"softmax"`` (a dense layer of logits) or ``"cosface"`` (`CosineLogits`: the
            normalised embedding against normalised class centres, times ``cosface_scale``; train
            it with `CosFaceLoss`).
        cosface_scale: the cosine head's scale ``s``.
        name: the model's name; ``facescale_<backbone>`` when None.

    Returns:
        A functional model mapping ``(B, S, S, 3)`` float32 images in [-1, 1] to
        ``(B, num_classes)`` float32 probabilities.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    if backbone not in BACKBONES:
        raise ConfigError(f"backbone must be one of {', '.join(BACKBONES)}, not {backbone!r}")
    smallest = MIN_IMAGE_SIZE if backbone == "inception_v3" else TINY_MIN_IMAGE_SIZE
    if image_size < smallest:
        raise ConfigError(f"image_size must be at least {smallest} for the {backbone} backbone, got {image_size}")
    if embedding_dim < 1:
        raise ConfigError(f"embedding_dim must be positive, got {embedding_dim}")
    if weights is not None and backbone != "inception_v3":
        raise ConfigError(f"weights are an Inception V3 backbone's; the {backbone} backbone starts from scratch")
    weights_path = _weights_file(weights)
    name = name or f"facescale_{backbone}"
    policy = precision_policy(mixed_precision)
    with dtype_policy(policy):
        shape = (image_size, image_size, 3)
        if backbone == "inception_v3":
            features_model = keras.applications.InceptionV3(
                include_top=False, weights=weights_path, input_shape=shape, pooling="avg", name=BACKBONE_LAYER
            )
        else:
            features_model = _tiny_backbone(shape)
        inputs = keras.Input(shape, name=INPUT_LAYER)
        features = features_model(inputs)
        embedding = keras.layers.Dense(embedding_dim, name="embedding_dense")(features)
        embedding = keras.layers.BatchNormalization(name=EMBEDDING_LAYER)(embedding)
        if head == "cosface":
            logits = CosineLogits(num_classes, cosface_scale, dtype="float32", name=LOGITS_LAYER)(embedding)
        elif head == "softmax":
            logits = keras.layers.Dense(num_classes, name=LOGITS_LAYER)(embedding)
        else:
            raise ConfigError(f"head must be softmax or cosface, not {head!r}")
        probabilities = keras.layers.Activation("softmax", dtype="float32", name=OUTPUT_LAYER)(logits)
        model = keras.Model(inputs, probabilities, name=name)
    if batchnorm_momentum is not None:
        if not 0.0 <= batchnorm_momentum < 1.0:
            raise ConfigError(f"batchnorm_momentum must be in [0, 1), got {batchnorm_momentum}")
        for layer in [*features_model.layers, *model.layers]:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = batchnorm_momentum  # read when the training step is traced
    log.info(
        "built %s: %d classes, %dx%d input, %s, %s backbone %s, %.3f M parameters",
        name, num_classes, image_size, image_size, policy, backbone,
        weights_path or "from scratch", model.count_params() / 1e6,
    )
    return model


@keras.saving.register_keras_serializable(package="facescale")
class CosineLogits(keras.layers.Layer):
    """``scale * cos(embedding, centre_j)`` for every class ``j``: the head of a margin softmax (CosFace,
    Wang et al. 2018). One weight, the class centres ``(embedding_dim, classes)``, no bias; float32."""

    def __init__(self, units: int, scale: float = 30.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)
        self.scale = float(scale)

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(
            name="kernel", shape=(int(input_shape[-1]), self.units), initializer="glorot_uniform"
        )

    def call(self, inputs: Any) -> Any:
        embedding = keras.ops.normalize(keras.ops.cast(inputs, "float32"), axis=-1)
        centres = keras.ops.normalize(keras.ops.cast(self.kernel, "float32"), axis=0)
        return self.scale * keras.ops.matmul(embedding, centres)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "scale": self.scale}


@keras.saving.register_keras_serializable(package="facescale")
class CosFaceLoss(keras.losses.Loss):
    """The large-margin cosine loss (CosFace) from a `CosineLogits` model's probabilities.

    Cross-entropy of ``softmax(z - scale * margin * onehot(label))``, ``z`` the head's logits:
    the true class must win by a cosine margin, which packs each identity's embeddings
    tighter than plain softmax does. ``log p`` equals ``z`` up to a per-row constant, which
    the softmax cancels, so the loss needs the probabilities the model outputs only (the
    model keeps one output, its metrics their names). ``smoothing`` as in label smoothing.
    """

    def __init__(
        self, margin: float, scale: float, smoothing: float = 0.0, name: str = "cosface", **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.margin, self.scale, self.smoothing = float(margin), float(scale), float(smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        target = keras.ops.one_hot(labels, classes, dtype="float32")
        logits = keras.ops.log(keras.ops.clip(keras.ops.cast(y_pred, "float32"), 1e-30, 1.0))
        margined = logits - self.scale * self.margin * target
        return keras.losses.categorical_crossentropy(target, margined, from_logits=True, label_smoothing=self.smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin, "scale": self.scale, "smoothing": self.smoothing}


def _tiny_backbone(shape: tuple[int, int, int]) -> keras.Model:
    """Three strided 3x3 convolutions (16, 32, 64 filters) with batch norm, global average pooled."""
    inputs = keras.Input(shape)
    x = inputs
    for i, filters in enumerate((16, 32, 64), start=1):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"conv{i}_bn")(x)
        x = keras.layers.Activation("relu", name=f"conv{i}_relu")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name=BACKBONE_LAYER)


def embedding_model(model: keras.Model) -> keras.Model:
    """The verification model: image -> L2-normalised float32 embedding.

    Shares its layers (and so its weights) with ``model``; works on a model loaded
    from ``model.keras`` as well as on a freshly built one.

    Args:
        model: a model made by `build_model`.

    Returns:
        A functional model mapping images to ``(B, embedding_dim)`` unit vectors.
    """
    embedding = model.get_layer(EMBEDDING_LAYER).output
    normalized = keras.layers.UnitNormalization(axis=-1, dtype="float32", name=NORMALIZED_EMBEDDING_LAYER)(embedding)
    return keras.Model(model.inputs, normalized, name=f"{model.name}_embedding")


class DistillationLoss(keras.layers.Layer):
    """Adds ``weight * mean(1 - cos(student, teacher))`` to the model's loss; passes the probabilities on.

    Inputs ``[probabilities, student embedding, teacher embedding]``. Rows whose teacher is
    the zero vector (no embedding known) are left out of the mean. No weights of its own: a
    distillation model saves and loads the same weights as the classifier it wraps.
    """

    def __init__(self, weight: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, inputs: list[Any]) -> Any:
        probabilities, student, teacher = inputs
        student = keras.ops.normalize(keras.ops.cast(student, "float32"), axis=-1)
        teacher = keras.ops.cast(teacher, "float32")
        present = keras.ops.cast(keras.ops.sum(keras.ops.abs(teacher), axis=-1) > 0, "float32")
        cosine = keras.ops.sum(student * keras.ops.normalize(teacher, axis=-1), axis=-1)
        distance = keras.ops.sum((1.0 - cosine) * present) / keras.ops.maximum(keras.ops.sum(present), 1.0)
        self.add_loss(self.weight * distance)
        return probabilities

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight": self.weight}


def distillation_model(model: keras.Model, weight: float) -> keras.Model:
    """The training-time model of ``training.teacher``: the classifier plus a distillation loss.

    Inputs ``{"image": ..., "teacher_embedding": (B, 128)}``; output the classifier's
    probabilities (so its metrics keep their names); every call adds
    `DistillationLoss` on the embedding layer. Shares every layer and weight with ``model``,
    which is what gets exported.
    """
    teacher = keras.Input((EMBEDDING_DIM,), name=TEACHER_INPUT)
    student = model.get_layer(EMBEDDING_LAYER).output
    probabilities = DistillationLoss(weight, dtype="float32", name=DISTILLATION_LAYER)(
        [model.outputs[0], student, teacher]
    )
    return keras.Model({INPUT_LAYER: model.inputs[0], TEACHER_INPUT: teacher}, probabilities, name=model.name)


def grow_from(model: keras.Model, previous: keras.Model) -> dict[str, int]:
    """Warm start: copy ``previous``'s backbone and embedding into ``model`` and grow its head.

    Labels are stable (label i is the same identity in every version), so the head's
    column i of the previous model is column i of the new one: the previous model's
    columns are copied, the new identities' columns keep their fresh initialisation.

    Args:
        model: a freshly built model with at least as many classes as ``previous``.
        previous: the model to start from (same embedding width).

    Returns:
        ``{"copied_classes": ..., "new_classes": ...}``.
    """
    for name in (BACKBONE_LAYER, "embedding_dense", EMBEDDING_LAYER):
        try:
            model.get_layer(name).set_weights(previous.get_layer(name).get_weights())
        except ValueError as exc:
            raise ConfigError(f"cannot warm-start from {previous.name}: layer {name!r} differs ({exc})") from exc
    old_head, head = previous.get_layer(LOGITS_LAYER), model.get_layer(LOGITS_LAYER)
    if type(old_head) is not type(head):
        raise ConfigError(
            f"cannot warm-start a {type(head).__name__} head from a {type(old_head).__name__} one "
            "(training.head differs)"
        )
    old_weights = old_head.get_weights()
    weights = [np.array(w) for w in head.get_weights()]
    old_kernel, kernel = old_weights[0], weights[0]
    old_classes, classes = old_kernel.shape[1], kernel.shape[1]
    if old_classes > classes or old_kernel.shape[0] != kernel.shape[0]:
        raise ConfigError(
            f"cannot warm-start a {classes}-class model with embedding {kernel.shape[0]} from a "
            f"{old_classes}-class one with embedding {old_kernel.shape[0]}"
        )
    kernel[:, :old_classes] = old_kernel
    if len(weights) == 2:  # the dense head's bias
        weights[1][:old_classes] = old_weights[1]
    head.set_weights(weights)
    log.info("warm start: backbone and embedding copied, head grown from %d to %d classes", old_classes, classes)
    return {"copied_classes": int(old_classes), "new_classes": int(classes - old_classes)}


def _weights_file(weights: str | os.PathLike[str] | None) -> str | None:
    if weights is None:
        return None
    path = os.fspath(weights)
    if path == "imagenet":
        raise ConfigError(
            "weights='imagenet' would download the ImageNet weights, which cannot happen here: "
            "give the path of a local Keras weights file (e.g. inception_v3_..._notop.h5)"
        )
    if not os.path.isfile(path):
        raise ConfigError(f"weights file not found: {path} (a local Keras weights file for the Inception V3 backbone)")
    return path
