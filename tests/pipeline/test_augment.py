"""augment: seeded OpenCV copies of real face crops (copy 0 the original) and the per-identity sample plan."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from facescale.pipeline.augment import (
    AugmentParams,
    PlannedSample,
    augment,
    augmented_copies,
    augmented_copy,
    extra_train_samples,
    plan_samples,
    sample_rng,
)
from facescale.pipeline.balance import BalanceParams, Candidate, Selection, balance_identity
from facescale.pipeline.split import Split, SplitParams, split_sources

#: Every random step switched off: augment must then return its input exactly.
NOTHING = AugmentParams(
    max_rotation_deg=0.0,
    scale_range=(1.0, 1.0),
    min_crop=1.0,
    flip_prob=0.0,
    contrast=0.0,
    brightness=0.0,
    blur_prob=0.0,
    noise_prob=0.0,
)
BALANCE = BalanceParams(min_count=30, target=50, seed=0)
SPLIT = SplitParams(seed=0)


def _crop(path: Path, size: int = 128) -> np.ndarray:
    """The centre of an LFW photo (250x250, face in the middle) as a size x size RGB crop."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    h, w = image.shape[:2]
    side = min(h, w) // 2
    top, left = (h - side) // 2, (w - side) // 2
    face = image[top : top + side, left : left + side]
    return cv2.cvtColor(cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def face(lfw_dev: Path) -> np.ndarray:
    return _crop(sorted((lfw_dev / "Aaron_Sorkin").glob("*.jpg"))[0])


def _digest(images: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for image in images:
        digest.update(repr(image.shape).encode())
        digest.update(image.tobytes())
    return digest.hexdigest()


def _ids(n: int, prefix: str = "photo") -> list[str]:
    return [hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() for i in range(n)]


def _identity(n: int) -> tuple[Selection, dict[str, Split]]:
    selection = balance_identity([Candidate(s, float(i)) for i, s in enumerate(_ids(n))], BALANCE)
    return selection, split_sources(selection.selected, SPLIT)


# --- augmentation ---------------------------------------------------------------------------


def test_copy_zero_is_the_original(face: np.ndarray) -> None:
    copies = augmented_copies(face, "src", 10, seed=0)
    assert len(copies) == 10
    assert np.array_equal(copies[0], face)
    assert copies[0] is not face  # a copy: writing to it leaves the input alone


def test_copies_differ_from_the_original_and_from_each_other(face: np.ndarray) -> None:
    copies = augmented_copies(face, "src", 10, seed=0)
    for copy in copies[1:]:
        assert copy.shape == face.shape and copy.dtype == np.uint8
        assert np.abs(copy.astype(np.int16) - face).mean() > 3
    for a, b in combinations(copies[1:], 2):
        assert np.abs(a.astype(np.int16) - b).mean() > 3


def test_deterministic_across_calls_and_each_copy_on_its_own(face: np.ndarray) -> None:
    copies = augmented_copies(face, "src", 8, seed=5)
    assert _digest(augmented_copies(face, "src", 8, seed=5)) == _digest(copies)
    for k in (7, 3, 1):  # any copy, in any order, without making the ones before it
        assert np.array_equal(augmented_copy(face, "src", k, seed=5), copies[k])


def test_seed_key_and_index_all_matter(face: np.ndarray) -> None:
    base = augmented_copy(face, "src", 1, seed=0)
    for other in (
        augmented_copy(face, "src", 1, seed=1),
        augmented_copy(face, "src2", 1, seed=0),
        augmented_copy(face, "src", 2, seed=0),
    ):
        assert not np.array_equal(base, other)


def test_the_same_in_another_process_with_another_hash_seed(face: np.ndarray) -> None:
    code = (
        "import hashlib, sys, numpy as np\n"
        "from facescale.pipeline.augment import augmented_copies\n"
        "face = np.frombuffer(sys.stdin.buffer.read(), np.uint8).reshape(128, 128, 3)\n"
        "d = hashlib.sha256()\n"
        "for im in augmented_copies(face, 'src', 6, seed=9):\n"
        "    d.update(repr(im.shape).encode()); d.update(im.tobytes())\n"
        "print(d.hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    out = subprocess.run([sys.executable, "-c", code], input=face.tobytes(), capture_output=True, check=True, env=env)
    assert out.stdout.decode().strip() == _digest(augmented_copies(face, "src", 6, seed=9))


def test_sample_rng_is_a_stable_function_of_its_key() -> None:
    a = sample_rng(0, "src", 3).integers(0, 2**62, size=4)
    assert np.array_equal(a, sample_rng(0, "src", 3).integers(0, 2**62, size=4))
    assert not np.array_equal(a, sample_rng(0, "src", 4).integers(0, 2**62, size=4))


def test_with_every_step_switched_off_the_image_is_unchanged(face: np.ndarray) -> None:
    assert np.array_equal(augment(face, np.random.default_rng(0), NOTHING), face)


def test_flip_alone_is_a_mirror(face: np.ndarray) -> None:
    flip = AugmentParams(**{**NOTHING.__dict__, "flip_prob": 1.0})
    assert np.array_equal(augment(face, np.random.default_rng(0), flip), face[:, ::-1])


def test_brightness_and_contrast_stay_in_range(face: np.ndarray) -> None:
    params = AugmentParams(**{**NOTHING.__dict__, "contrast": 0.2, "brightness": 0.15})
    rng = np.random.default_rng(1)
    for _ in range(20):
        out = augment(face, rng, params)
        assert abs(float(out.mean()) - float(face.mean())) <= 0.15 * 255 + 1
        assert 0.75 * face.std() <= out.std() <= 1.25 * face.std()


@given(
    st.integers(1, 80),
    st.integers(1, 80),
    st.sampled_from([None, 1, 3, 4]),
    st.integers(0, 2**32 - 1),
)
def test_shape_and_dtype_are_preserved(height: int, width: int, channels: int | None, seed: int) -> None:
    shape = (height, width) if channels is None else (height, width, channels)
    image = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    for copy in augmented_copies(image, "k", 4, seed):
        assert copy.shape == shape and copy.dtype == np.uint8


def test_non_contiguous_input_is_fine(face: np.ndarray) -> None:
    view = face[:, ::-1]
    assert augmented_copy(view, "src", 1, 0).shape == face.shape


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((8, 8, 3), np.float32),
        np.zeros((0, 8, 3), np.uint8),
        np.zeros((8, 8, 5), np.uint8),
        np.zeros((2, 8, 8, 3), np.uint8),
        [[0, 1], [2, 3]],
    ],
)
def test_bad_images_are_rejected(image: object) -> None:
    with pytest.raises(ValueError, match=r"uint8 image|channels"):
        augmented_copy(image, "k", 1, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        augmented_copy(image, "k", 0, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        {"max_rotation_deg": -1.0},
        {"scale_range": (1.1, 0.9)},
        {"scale_range": (0.0, 1.0)},
        {"min_crop": 0.0},
        {"min_crop": 1.5},
        {"flip_prob": 1.5},
        {"contrast": 1.0},
        {"blur_prob": 0.6, "noise_prob": 0.6},
        {"noise_std_range": (3.0, 2.0)},
    ],
)
def test_params_are_validated(change: dict) -> None:
    with pytest.raises(ValueError):
        AugmentParams(**change)


def test_negative_index_or_count_is_rejected(face: np.ndarray) -> None:
    with pytest.raises(ValueError):
        augmented_copy(face, "k", -1, 0)
    with pytest.raises(ValueError):
        augmented_copies(face, "k", -1, 0)


# --- the sample plan --------------------------------------------------------------------------


def test_a_full_identity_gets_365_samples() -> None:
    selection, split = _identity(60)
    plan = plan_samples(selection, split, 10, extra_train_samples(selection, 10))
    assert extra_train_samples(selection, 10) == 0
    assert Counter(p.split for p in plan) == {"train": 350, "val": 10, "test": 5}
    assert len(plan) == 35 * 10 + 10 + 5 == 365
    assert len(set(plan)) == len(plan)
    by_source: dict[str, list[int]] = {}
    for p in plan:
        assert p.split == split[p.source_image_id]
        by_source.setdefault(p.source_image_id, []).append(p.aug_index)
    for source, indices in by_source.items():
        assert indices == (list(range(10)) if split[source] == "train" else [0])


def test_a_padded_identity_makes_up_its_train_samples_with_augmented_copies() -> None:
    selection, split = _identity(40)
    assert selection.status == "kept_padded" and selection.shortfall == 10
    extra = extra_train_samples(selection, 10)
    assert extra == (35 - 28) * 10 == 70
    plan = plan_samples(selection, split, 10, extra)
    assert Counter(p.split for p in plan) == {"train": 350, "val": 8, "test": 4}
    per_source = Counter(p.source_image_id for p in plan if p.split == "train")
    assert len(per_source) == 28
    assert sorted(set(per_source.values())) == [12, 13]  # 70 = 28 x 2 + 14: the 14 best get one more
    train_in_rank_order = [s for s in selection.selected if split[s] == "train"]
    assert [per_source[s] for s in train_in_rank_order] == [13] * 14 + [12] * 14
    for source, count in per_source.items():  # indices are contiguous from 0: the original plus copies
        assert sorted(p.aug_index for p in plan if p.source_image_id == source) == list(range(count))


@given(st.integers(30, 50), st.integers(1, 12))
def test_every_kept_identity_has_as_many_train_samples_as_a_full_one(n: int, factor: int) -> None:
    selection, split = _identity(n)
    plan = plan_samples(selection, split, factor, extra_train_samples(selection, factor))
    assert sum(p.split == "train" for p in plan) == 35 * factor
    assert all(p.aug_index == 0 for p in plan if p.split != "train")
    assert len(set(plan)) == len(plan)


def test_the_plan_is_deterministic_and_needs_no_seed() -> None:
    selection, split = _identity(37)
    extra = extra_train_samples(selection, 10)
    assert plan_samples(selection, split, 10, extra) == plan_samples(
        selection, dict(reversed(split.items())), 10, extra
    )
    assert all(isinstance(p, PlannedSample) for p in plan_samples(selection, split, 10, extra))


def test_a_waiting_identity_gets_nothing() -> None:
    selection = balance_identity([Candidate(s, 1.0) for s in _ids(5)], BALANCE)
    assert selection.status == "waiting"
    assert extra_train_samples(selection, 10) == 0
    assert plan_samples(selection, {}, 10) == []


def test_the_plan_checks_its_inputs() -> None:
    selection, split = _identity(50)
    with pytest.raises(ValueError, match="cover exactly"):
        plan_samples(selection, dict(list(split.items())[1:]), 10)
    with pytest.raises(ValueError, match="cover exactly"):
        plan_samples(selection, {**split, "stranger": "test"}, 10)
    with pytest.raises(ValueError):
        plan_samples(selection, split, 0)
    with pytest.raises(ValueError):
        plan_samples(selection, split, 10, extra=-1)
    with pytest.raises(ValueError, match="unknown split"):
        plan_samples(selection, {s: "Train" for s in split}, 10)  # type: ignore[misc]
    only_val = {s: "val" for s in split}
    with pytest.raises(ValueError, match="no train photo"):
        plan_samples(selection, only_val, 10, extra=5)


# --- real photos, end to end ----------------------------------------------------------------


def test_real_identities_balance_split_and_augment(lfw_dev: Path) -> None:
    """Jacques Chirac's 52 photos (kept: 50) and 40 of them (padded), quality = sharpness."""
    paths = sorted((lfw_dev / "Jacques_Chirac").glob("*.jpg"))
    assert len(paths) >= 50
    crops = {hashlib.sha256(p.read_bytes()).hexdigest(): _crop(p) for p in paths}
    sharpness = {
        s: float(cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()) for s, c in crops.items()
    }
    candidates = [Candidate(s, q) for s, q in sharpness.items()]

    for pool, status in ((candidates, "kept"), (candidates[:40], "kept_padded")):
        selection = balance_identity(pool, BALANCE)
        assert selection.status == status
        split = split_sources(selection.selected, SPLIT)
        plan = plan_samples(selection, split, 10, extra_train_samples(selection, 10))
        assert sum(p.split == "train" for p in plan) == 350
        if status == "kept":  # the two least sharp photos are the ones left out
            left_out = set(crops) - set(selection.selected)
            assert left_out == set(sorted(sharpness, key=sharpness.get)[:2])

    # A few of the planned samples, made twice, agree; the originals are the crops themselves.
    for sample in plan[:12]:
        image = crops[sample.source_image_id]
        made = augmented_copy(image, sample.source_image_id, sample.aug_index, seed=0)
        assert np.array_equal(made, augmented_copy(image, sample.source_image_id, sample.aug_index, seed=0))
        assert np.array_equal(made, image) == (sample.aug_index == 0)
    json.dumps([selection.to_manifest()])  # the manifest record is JSON-ready
