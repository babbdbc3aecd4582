"""The tf.data input: coverage per split, shapes and range, per-epoch shuffles, the epoch stream."""

from __future__ import annotations

import collections
import io
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from facescale.errors import ConfigError, IntegrityError
from facescale.storage import Location
from facescale.training.data import CuratedInput, decode_image

if TYPE_CHECKING:
    from conftest import Curated



def _pairs(dataset: tf.data.Dataset) -> list[tuple[bytes, int]]:
    return [(bytes(image), int(label)) for image, label in dataset.as_numpy_iterator()]


def _labels(dataset: tf.data.Dataset) -> list[int]:
    return [int(label) for _, label in dataset.as_numpy_iterator()]


def test_version_info_from_the_manifest(curated: Curated) -> None:
    data = CuratedInput(curated.store, curated.version_id, "train")
    assert data.num_classes == 6  # labels 0, 2, 5: the head spans the gaps
    assert dict(data.info.split_counts) == {"train": 24, "val": 6, "test": 6}
    assert data.num_examples == 24
    assert data.steps(8) == 3 and data.steps(5) == 5 and data.steps(5, drop_remainder=True) == 4
    assert data.info.labels() == {
        0: {"name": "Colin Powell", "slug": "colin-powell"},
        2: {"name": "Tony Blair", "slug": "tony-blair"},
        5: {"name": "Donald Rumsfeld", "slug": "donald-rumsfeld"},
    }


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_ordered_pass_covers_each_example_exactly_once(curated: Curated, split: str) -> None:
    data = CuratedInput(curated.store, curated.version_id, split)
    first = _pairs(data.encoded())
    expected = collections.Counter((r["image"], r["label"]) for r in curated.split(split))
    assert collections.Counter(first) == expected
    assert len(first) == data.num_examples
    assert _pairs(data.encoded()) == first  # evaluation order is reproducible


def test_batches_have_model_shapes_dtypes_and_range(curated: Curated) -> None:
    data = CuratedInput(curated.store, curated.version_id, "train", image_size=75)
    batches = list(data.dataset(5))
    assert [len(labels) for _, labels in batches] == [5, 5, 5, 5, 4]
    images, labels = batches[0]
    assert images.shape == (5, 75, 75, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    every = np.concatenate([b[0].numpy() for b in batches])
    assert every.min() >= -1.0 and every.max() <= 1.0
    assert every.min() < -0.5 and every.max() > 0.5  # scaled, not squashed
    assert set(np.concatenate([b[1].numpy() for b in batches])) == {0, 2, 5}
    assert [len(b[1]) for b in data.dataset(8, drop_remainder=True)] == [8, 8, 8]


def test_decode_matches_the_stored_crop(curated: Curated) -> None:
    row = curated.split("val")[0]
    image = decode_image(tf.constant(row["image"]), 96).numpy()  # the crop's own size: no resampling
    pixels = np.asarray(Image.open(io.BytesIO(row["image"])).convert("RGB"), dtype=np.float32)
    assert np.abs(image - (pixels / 127.5 - 1.0)).mean() < 2 / 127.5  # the fast IDCT: off by < 2 levels
    smaller, larger = decode_image(tf.constant(row["image"]), 75), decode_image(tf.constant(row["image"]), 120)
    assert smaller.shape == (75, 75, 3) and larger.shape == (120, 120, 3)
    assert abs(float(tf.reduce_mean(smaller)) - float(image.mean())) < 0.02  # same picture, resampled


def test_training_order_is_shuffled_per_epoch_and_reproducible(curated: Curated) -> None:
    data = CuratedInput(curated.store, curated.version_id, "train", shuffle_buffer=10)  # blocks of 2 row groups
    epoch0 = _pairs(data.encoded(shuffle=True, seed=7, epoch=0))
    epoch1 = _pairs(data.encoded(shuffle=True, seed=7, epoch=1))
    other_seed = _pairs(data.encoded(shuffle=True, seed=8, epoch=0))
    ordered = _pairs(data.encoded())
    assert collections.Counter(epoch0) == collections.Counter(ordered)  # still each once
    assert epoch0 != ordered and epoch0 != epoch1 and epoch0 != other_seed
    assert _pairs(data.encoded(shuffle=True, seed=7, epoch=0)) == epoch0  # a function of (seed, epoch)
    # The crops are written one identity after another; the first few samples mix people.
    assert len({label for _, label in epoch0[:6]}) > 1


def test_an_epoch_is_cut_into_equal_blocks(curated: Curated) -> None:
    data = CuratedInput(curated.store, curated.version_id, "train", shuffle_buffer=10)
    groups = len(data.row_groups)
    assert groups % data.groups_per_block, "the fixture should not divide evenly"
    blocks = data._plan(True, 7, 0)
    sizes = [len(b) for b in blocks]
    assert len(blocks) == -(-groups // data.groups_per_block)
    assert max(sizes) - min(sizes) <= 1  # no short tail block ending every epoch on a few row groups
    assert sorted(i for b in blocks for i in b.tolist()) == list(range(groups))


def test_epoch_stream_resumes_where_an_uninterrupted_stream_is(curated: Curated) -> None:
    data = CuratedInput(curated.store, curated.version_id, "train", image_size=75)
    full = [labels.numpy().tolist() for _, labels in data.epochs(8, 2, end_epoch=3, seed=3)]
    assert len(full) == 6 and all(len(b) == 8 for b in full)
    resumed = [labels.numpy().tolist() for _, labels in data.epochs(8, 2, start_epoch=1, end_epoch=3, seed=3)]
    assert resumed == full[2:]
    epoch1 = data.dataset(8, shuffle=True, seed=3, epoch=1, drop_remainder=True)
    assert [labels.numpy().tolist() for _, labels in epoch1.take(2)] == full[2:4]
    assert data.epochs(8, 2, end_epoch=3).cardinality() == 6


def test_steps_beyond_the_split_are_refused(curated: Curated) -> None:
    data = CuratedInput(curated.store, curated.version_id, "train")
    with pytest.raises(ConfigError, match="3 full batches of 8"):
        data.epochs(8, 4, end_epoch=1)
    with pytest.raises(ConfigError, match="unknown split"):
        CuratedInput(curated.store, curated.version_id, "holdout")


def test_reads_from_an_fsspec_memory_location(version_factory: Callable[[Location], Curated]) -> None:
    location = Location.from_uri(f"memory://facescale-training-{uuid.uuid4().hex}")
    try:
        version = version_factory(location)
        data = CuratedInput(version.store, version.version_id, "train", image_size=75)
        assert collections.Counter(_pairs(data.encoded())) == collections.Counter(
            (r["image"], r["label"]) for r in version.split("train")
        )
        shuffled = data.epochs(8, 3, end_epoch=1, seed=0)
        labels = np.concatenate([b.numpy() for _, b in shuffled])
        assert sorted(labels.tolist()) == sorted(r["label"] for r in version.split("train"))
    finally:
        location.fs.rm(location.root, recursive=True)


def test_a_missing_shard_is_an_integrity_error(version_factory: Callable[[Location], Curated]) -> None:
    location = Location.from_uri(f"memory://facescale-training-{uuid.uuid4().hex}")
    try:
        version = version_factory(location)
        store = version.store
        location.fs.rm(store.shard_paths(store.get(version.version_id))[1])
        with pytest.raises(IntegrityError, match="shard missing"):
            CuratedInput(store, version.version_id, "train")
    finally:
        location.fs.rm(location.root, recursive=True)
