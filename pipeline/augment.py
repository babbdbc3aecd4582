"""Augmented copies of face crops (OpenCV + numpy), deterministic from a seed, and the sample plan.

`augment` applies one random draw of: rotation (+-15 degrees) and scale (0.9-1.1) about the
centre, a random crop of 87.5-100 % of the side resized back to the input size, a horizontal
flip (p = 0.5), contrast (x0.8-1.2 about the mean) and brightness (+-15 % of full range), and
at most one of a mild Gaussian blur (sigma 0.4-1.0, p = 0.25) or Gaussian noise (std 2-6 grey
levels, p = 0.25). The geometric steps are folded into one affine warp (one interpolation,
reflected borders so no black corners appear for the model to learn from).

Copy ``k`` of a photo draws from its own generator, seeded from a blake2b hash of
``(seed, sample_key, k)`` (never Python's per-process ``hash()``), so any copy can be made on
its own, on any worker, in any order, and comes out the same. Copy 0 is the original, unchanged.
Every parameter is drawn on every call in a fixed order, so changing one probability does not
shift the others' draws. Pixels are reproducible for a given numpy and OpenCV version (numpy
does not promise identical `Generator` streams across releases, nor OpenCV identical warps);
sample ids depend only on (source, aug_index), never on pixels.

`plan_samples` says which samples an identity gets: train photos ``augment_factor`` each
(aug_index 0 .. augment_factor-1), val and test photos their original only (augmenting them
would put near-duplicates into the evaluation). An identity kept with fewer than ``target``
photos gets its missing train samples (`extra_train_samples`) as extra augmented copies of its
train photos, never as raw duplicates, so every kept identity has as many train samples as a
full one (350 for 50 photos, 35 of them train, x10); its val and test stay smaller.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from .balance import Selection
from .split import DEFAULT_FRACTIONS, SPLITS, Split, split_counts

_PERSON = b"fs.augment"  # blake2b personalisation of the per-copy seeds


@dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random augmentation (the defaults are mild, for 96-128 px face crops).

    Attributes:
        max_rotation_deg: rotation drawn from [-max, +max] degrees.
        scale_range: zoom about the centre drawn from this range (1 = unchanged).
        min_crop: side of the random crop as a fraction of the image side, drawn from
            [min_crop, 1]; the crop is resized back to the input size.
        flip_prob: probability of a horizontal flip.
        contrast: contrast factor drawn from [1 - contrast, 1 + contrast], about the mean.
        brightness: shift drawn from [-brightness, +brightness] x 255.
        blur_prob: probability of a Gaussian blur.
        blur_sigma_range: its sigma, in pixels.
        noise_prob: probability of Gaussian noise (never together with the blur).
        noise_std_range: its standard deviation, in grey levels.
    """

    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    min_crop: float = 0.875
    flip_prob: float = 0.5
    contrast: float = 0.2
    brightness: float = 0.15
    blur_prob: float = 0.25
    blur_sigma_range: tuple[float, float] = (0.4, 1.0)
    noise_prob: float = 0.25
    noise_std_range: tuple[float, float] = (2.0, 6.0)

    def __post_init__(self) -> None:
        if not 0 <= self.max_rotation_deg <= 180:
            raise ValueError(f"max_rotation_deg must be in [0, 180], got {self.max_rotation_deg}")
        if not 0 < self.min_crop <= 1:
            raise ValueError(f"min_crop must be in (0, 1], got {self.min_crop}")
        if not 0 <= self.contrast < 1 or not 0 <= self.brightness <= 1:
            raise ValueError("contrast must be in [0, 1) and brightness in [0, 1]")
        for name in ("flip_prob", "blur_prob", "noise_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.blur_prob + self.noise_prob > 1:
            raise ValueError("blur_prob + noise_prob must not exceed 1 (at most one of them is applied)")
        for name, low_bound in (("scale_range", 0.0), ("blur_sigma_range", 0.0), ("noise_std_range", -1.0)):
            low, high = getattr(self, name)
            if not low_bound < low <= high:
                raise ValueError(f"{name} must be (low, high) with {low_bound} < low <= high, got {(low, high)}")


class PlannedSample(NamedTuple):
    """One CURATED sample to make: a source photo, its split and the copy index (0 = original)."""

    source_image_id: str
    split: Split
    aug_index: int


def augment(image: np.ndarray, rng: np.random.Generator, params: AugmentParams | None = None) -> np.ndarray:
    """One random augmentation of a face crop.

    Args:
        image: ``uint8`` array, H x W or H x W x C (RGB or BGR: channels are treated alike).
        rng: the source of randomness; the same generator state gives the same output.
        params: the ranges; `AugmentParams` defaults when None.

    Returns:
        A new ``uint8`` array with the shape of ``image``.

    Raises:
        ValueError: ``image`` is not a 2-D or 3-D ``uint8`` array with at least one pixel.
    """
    _check_image(image)
    p = params or AugmentParams()
    height, width = image.shape[:2]
    # Every draw happens on every call, in this order (see the module docstring).
    angle = rng.uniform(-p.max_rotation_deg, p.max_rotation_deg)
    scale = rng.uniform(*p.scale_range)
    crop = rng.uniform(p.min_crop, 1.0)
    crop_x, crop_y = rng.uniform(0.0, 1.0, size=2)
    flip = rng.uniform() < p.flip_prob
    alpha = rng.uniform(1.0 - p.contrast, 1.0 + p.contrast)
    beta = rng.uniform(-p.brightness, p.brightness) * 255.0
    degrade = rng.uniform()
    sigma = rng.uniform(*p.blur_sigma_range)
    noise_std = rng.uniform(*p.noise_std_range)

    matrix = _geometry(width, height, angle, scale, crop, crop_x, crop_y, flip)
    warped = cv2.warpAffine(
        np.ascontiguousarray(image), matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    ).reshape(image.shape)

    out: np.ndarray = warped.astype(np.float32)
    mean = float(out.mean())
    out = (out - mean) * alpha + mean + beta
    if degrade < p.blur_prob:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma).reshape(image.shape)
    elif degrade < p.blur_prob + p.noise_prob:
        out += rng.normal(0.0, noise_std, size=out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def sample_rng(seed: int, sample_key: str, aug_index: int) -> np.random.Generator:
    """The generator for copy ``aug_index`` of the photo ``sample_key``.

    Args:
        seed: the curation seed.
        sample_key: what identifies the photo, normally its ``source_image_id``.
        aug_index: the copy index.

    Returns:
        A PCG64 generator seeded from blake2b of ``(seed, sample_key, aug_index)``: the same in
        every process and on every machine.
    """
    payload = json.dumps([seed, sample_key, aug_index]).encode()
    entropy = int.from_bytes(hashlib.blake2b(payload, digest_size=16, person=_PERSON).digest(), "big")
    return np.random.default_rng(np.random.SeedSequence(entropy))


def augmented_copy(
    image: np.ndarray, sample_key: str, aug_index: int, seed: int, params: AugmentParams | None = None
) -> np.ndarray:
    """Copy ``aug_index`` of a photo: the original for 0, else `augment` with `sample_rng`.

    Args:
        image: the face crop (see `augment`).
        sample_key: what identifies the photo, normally its ``source_image_id``.
        aug_index: 0 for the original, 1.. for augmented copies.
        seed: the curation seed.
        params: the ranges; `AugmentParams` defaults when None.

    Returns:
        A new ``uint8`` array with the shape of ``image``.

    Raises:
        ValueError: ``aug_index`` is negative, or ``image`` is not a ``uint8`` image.
    """
    if aug_index < 0:
        raise ValueError(f"aug_index must be >= 0, got {aug_index}")
    if aug_index == 0:
        _check_image(image)
        return image.copy()
    return augment(image, sample_rng(seed, sample_key, aug_index), params)


def augmented_copies(
    image: np.ndarray, sample_key: str, count: int, seed: int, params: AugmentParams | None = None
) -> list[np.ndarray]:
    """Copies 0 .. count-1 of a photo (copy 0 is the original).

    Args:
        image: the face crop (see `augment`).
        sample_key: what identifies the photo, normally its ``source_image_id``.
        count: how many samples, the original included.
        seed: the curation seed.
        params: the ranges; `AugmentParams` defaults when None.

    Returns:
        ``count`` arrays; element ``k`` equals ``augmented_copy(image, sample_key, k, seed, params)``.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return [augmented_copy(image, sample_key, k, seed, params) for k in range(count)]


def extra_train_samples(
    selection: Selection, augment_factor: int, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> int:
    """Augmented train samples a padded identity needs to match a full one.

    Args:
        selection: the identity's balancing decision.
        augment_factor: train samples per train photo, the original included.
        fractions: the split fractions (train, val, test).

    Returns:
        ``(train(target) - train(n)) * augment_factor`` for ``kept_padded`` (``train(k)`` being
        the train count of `split_counts` for ``k`` photos); 0 for ``kept`` and ``waiting``.
        E.g. 40 of 50 photos: (35 - 28) x 10 = 70.
    """
    _check_factor(augment_factor)
    if selection.status != "kept_padded":
        return 0
    full = split_counts(selection.target, fractions).train
    have = split_counts(len(selection.selected), fractions).train
    return max(0, full - have) * augment_factor


def plan_samples(
    selection: Selection, split: Mapping[str, Split], augment_factor: int, extra: int = 0
) -> list[PlannedSample]:
    """The samples one identity contributes to the dataset.

    Train photos get aug_index 0 .. augment_factor-1; val and test photos aug_index 0 only.
    ``extra`` more augmented train samples (normally `extra_train_samples`, for a padded
    identity) are spread over the train photos in the selection's order (best quality first):
    each gets ``extra // n_train`` more, the first ``extra % n_train`` one more again, numbered
    on from ``augment_factor``. A ``waiting`` identity gets nothing.

    Args:
        selection: the identity's balancing decision.
        split: source id -> split for exactly the selected photos (`split_sources`).
        augment_factor: train samples per train photo, the original included.
        extra: additional augmented train samples.

    Returns:
        The planned samples, photo by photo in selection order, aug_index ascending. With 50
        photos split 35/10/5 and a factor of 10: 35 x 10 train + 10 val + 5 test = 365 samples.

    Raises:
        ValueError: ``split`` does not cover exactly the selected photos, ``augment_factor`` < 1,
            ``extra`` < 0, ``extra`` > 0 without any train photo, or a split name is unknown.
    """
    _check_factor(augment_factor)
    if extra < 0:
        raise ValueError(f"extra must be >= 0, got {extra}")
    if not selection.kept:
        return []
    if set(split) != set(selection.selected):
        missing = sorted(set(selection.selected) - set(split))[:3]
        unknown = sorted(set(split) - set(selection.selected))[:3]
        raise ValueError(f"split must cover exactly the selected photos (missing {missing}, unknown {unknown})")
    odd = sorted({str(name) for name in split.values()} - set(SPLITS))
    if odd:
        raise ValueError(f"unknown split names {odd}; expected {list(SPLITS)}")
    train = [s for s in selection.selected if split[s] == "train"]
    if extra and not train:
        raise ValueError(f"{extra} extra train samples requested but the identity has no train photo")
    each, rest = divmod(extra, len(train)) if train else (0, 0)
    more = {source: each + (1 if i < rest else 0) for i, source in enumerate(train)}
    plan: list[PlannedSample] = []
    for source in selection.selected:
        name = split[source]
        count = augment_factor + more[source] if name == "train" else 1
        plan.extend(PlannedSample(source, name, k) for k in range(count))
    return plan


def _geometry(
    width: int, height: int, angle: float, scale: float, crop: float, crop_x: float, crop_y: float, flip: bool
) -> np.ndarray:
    """Rotation+scale about the centre, then crop-and-resize, then flip, as one 2x3 affine matrix.

    Pixel centres sit at integer coordinates (OpenCV's convention), so a crop of width ``cw`` at
    ``x0`` maps ``x`` to ``(x + 0.5 - x0) * width / cw - 0.5``.
    """
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    rotate = np.vstack([cv2.getRotationMatrix2D(centre, angle, scale), [0.0, 0.0, 1.0]])
    crop_w, crop_h = crop * width, crop * height
    x0, y0 = crop_x * (width - crop_w), crop_y * (height - crop_h)
    sx, sy = width / crop_w, height / crop_h
    resize = np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5], [0.0, 0.0, 1.0]])
    mirror = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if flip else np.eye(3)
    return (mirror @ resize @ rotate)[:2]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected a non-empty H x W or H x W x C uint8 image, got {dtype} {shape}")
    if image.ndim == 3 and image.shape[2] > 4:
        raise ValueError(f"expected at most 4 channels, got {image.shape[2]}")


def _check_factor(augment_factor: int) -> None:
    if augment_factor < 1:
        raise ValueError(f"augment_factor must be >= 1, got {augment_factor}")
