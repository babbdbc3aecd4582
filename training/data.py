"""Streaming tf.data input from a CURATED version's Parquet shards: read, shuffle, decode, batch.

The unit of reading is one Parquet row group (256 rows by default) of one shard, local or
behind any fsspec URI; the unit of shuffling is a block of row groups holding about
``shuffle_buffer`` samples. Nothing loads a whole split: at any moment the pipeline holds
at most three blocks of encoded JPEG bytes (about 5 KB each) and a few decoded batches.

Training order (``shuffle=True``) is a function of ``(seed, epoch)`` only:

1. the split's row groups are permuted (NumPy's PCG64 keyed by ``(seed, epoch)``) and cut
   into equal blocks (within one row group) of consecutive row groups, so a block draws
   from shards all over the version; curation mixes the identities of a shard within each
   split (`facescale.pipeline.sink.mixed_order`), so a row group holds many identities
   and a block most of them;
2. a block's row groups are read in parallel (threads; pyarrow releases the GIL, which
   also hides object-store latency), concatenated and permuted as a whole (keyed by
   ``(seed, epoch, block)``), while the next block is being read;
3. JPEGs are decoded and resized in a parallel map, batched, scaled to [-1, 1] (what
   Inception V3 expects) per batch, and prefetched.

No RNG state is involved anywhere (no ``Dataset.shuffle``): the same ``(seed, epoch)``
gives the same batches in any process, so a resumed training run sees exactly the batches
an uninterrupted one would. ``deterministic=False`` lets the decode map emit in completion
order (a little faster, not reproducible). Evaluation order (``shuffle=False``) is the
shards' own order.

Labels are the stable registry labels stored in the shards; they may have gaps (removed
identities keep their label), so the class count is the largest label + 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf

from facescale.errors import ConfigError, IntegrityError
from facescale.storage import SPLITS, DatasetStore, IdentityEntry, Location, Manifest
from facescale.storage.fs import os_errors
from facescale.storage.schemas import EMBEDDING_DIM

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_SHUFFLE_BUFFER = 8192  # samples per shuffled block (~50 MB at 128 px; up to 3 blocks held)
DEFAULT_READ_THREADS = 8  # row groups of a block read at once
READ_COLUMNS = ("image", "label", "split")
TEACHER_COLUMNS = ("source_image_id",)  # read as well when the input has a teacher
INPUT_NAME = "image"  # model.INPUT_LAYER (this module does not build models)
TEACHER_NAME = "teacher_embedding"  # model.TEACHER_INPUT


@dataclass(frozen=True)
class VersionInfo:
    """What training needs to know about a CURATED version, from its manifest alone."""

    version_id: str
    num_classes: int
    split_counts: Mapping[str, int]
    identities: tuple[IdentityEntry, ...]

    def labels(self) -> dict[int, dict[str, str]]:
        """Label -> ``{"name", "slug"}`` of every identity in the version, by label."""
        return {i.label: {"name": i.name, "slug": i.slug} for i in sorted(self.identities, key=lambda i: i.label)}


def version_info(manifest: Manifest) -> VersionInfo:
    """Class count, examples per split and identities of a version.

    Args:
        manifest: the version's manifest (``DatasetStore.get``).

    Returns:
        The `VersionInfo`; ``num_classes`` is the largest label + 1 (labels may have gaps).
    """
    if not manifest.identities:
        raise ConfigError(f"dataset version {manifest.version_id} has no identities to train on")
    return VersionInfo(
        version_id=manifest.version_id,
        num_classes=max(i.label for i in manifest.identities) + 1,
        split_counts=manifest.split_counts(),
        identities=tuple(manifest.identities),
    )


@dataclass(frozen=True)
class RowGroup:
    """One row group of one shard that holds rows of the wanted split."""

    path: str
    index: int
    rows: int
    mixed: bool  # holds rows of other splits too (they are filtered out when read)


def resize_image(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded JPEG bytes -> float32 ``(image_size, image_size, 3)`` RGB in [0, 255].

    Per-image work is kept to two ops (decode, resize); scaling happens per batch
    (`scale_images`). Measured on 128 px crops: the fast integer IDCT decodes about 1.5x
    faster than the default one; plain bilinear resampling costs half what antialiased
    bilinear does, and at curation's 128 -> 96 px its aliasing is negligible.

    Args:
        image: a scalar string tensor holding a JPEG.
        image_size: the side of the square model input.

    Returns:
        The decoded, resized image.
    """
    pixels = tf.io.decode_jpeg(image, channels=3, dct_method="INTEGER_FAST")
    resized = tf.image.resize(pixels, (image_size, image_size), method="bilinear")
    resized.set_shape((image_size, image_size, 3))
    return resized


def scale_images(images: tf.Tensor) -> tf.Tensor:
    """[0, 255] pixels -> [-1, 1], Inception V3's input range (any leading shape).

    Args:
        images: float32 pixel values.

    Returns:
        ``images / 127.5 - 1``, clipped onto [-1, 1] (resampling round-off).
    """
    return tf.clip_by_value(images / 127.5 - 1.0, -1.0, 1.0)


def decode_image(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """Encoded JPEG bytes -> the model's input: float32 ``(S, S, 3)`` RGB in [-1, 1].

    The one preprocessing of training, evaluation and serving (`resize_image`, then
    `scale_images`).

    Args:
        image: a scalar string tensor holding a JPEG.
        image_size: the side of the square model input.

    Returns:
        The model-ready image.
    """
    return scale_images(resize_image(image, image_size))


class CuratedInput:
    """The examples of one split of a CURATED version as tf.data datasets."""

    def __init__(
        self,
        store: DatasetStore,
        version_id: str,
        split: str,
        image_size: int = 96,
        *,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        read_threads: int = DEFAULT_READ_THREADS,
        teacher: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Index the split's row groups from the shards' footers (no image is read).

        Args:
            store: the dataset store holding the version.
            version_id: a committed CURATED version.
            split: ``train``, ``val`` or ``test``.
            image_size: side of the square images produced (>= 75 for Inception V3).
            shuffle_buffer: about how many samples are shuffled together (a block of row
                groups; up to three blocks are held in memory).
            read_threads: row groups of a block read at once.
            teacher: source photo id -> its teacher embedding (`teacher.teacher_embeddings`):
                the inputs then carry each sample's target as ``teacher_embedding`` (the zero
                vector for a photo without one).
        """
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        if image_size < 1 or shuffle_buffer < 1 or read_threads < 1:
            raise ConfigError("image_size, shuffle_buffer and read_threads must be positive")
        self.store = store
        self.manifest = store.get(version_id)
        self.info = version_info(self.manifest)
        self.split = split
        self.image_size = image_size
        self.shuffle_buffer = shuffle_buffer
        self.read_threads = read_threads
        self.teacher = teacher
        self._columns = [*READ_COLUMNS, *(TEACHER_COLUMNS if teacher is not None else ())]
        self._location: Location = store.location
        self._metadata: dict[str, pq.FileMetaData] = {}
        self._plans: dict[tuple[bool, int, int], list[np.ndarray]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self.row_groups: list[RowGroup] = self._index(store.shard_paths(self.manifest))
        mean_rows = sum(g.rows for g in self.row_groups) / max(1, len(self.row_groups))
        self.groups_per_block = max(1, round(shuffle_buffer / max(1.0, mean_rows)))
        log.debug(
            "version %s split %s: %d examples in %d row groups",
            version_id, split, self.num_examples, len(self.row_groups),
        )

    @property
    def num_examples(self) -> int:
        """Examples in the split, from the manifest."""
        return self.info.split_counts.get(self.split, 0)

    @property
    def num_classes(self) -> int:
        """Size of the classifier head: the largest label + 1."""
        return self.info.num_classes

    def steps(self, batch_size: int, drop_remainder: bool = False, shards: int = 1) -> int:
        """Batches in one pass over the split (over its smallest shard when ``shards`` > 1)."""
        full, rest = divmod(self.num_examples // shards if shards > 1 else self.num_examples, batch_size)
        return full if drop_remainder or not rest else full + 1

    def shard_examples(self, shard: tuple[int, int] | None) -> int:
        """Examples in shard ``(count, index)`` of the split: every count-th sample from index on."""
        if shard is None:
            return self.num_examples
        count, index = shard
        if not 0 <= index < count:
            raise ConfigError(f"shard index {index} is not in 0..{count - 1}")
        return len(range(index, self.num_examples, count))

    # -- datasets ------------------------------------------------------------------------
    def encoded(self, *, shuffle: bool = False, seed: int = 0, epoch: int | tf.Tensor = 0) -> tf.data.Dataset:
        """One pass over the split as ``(jpeg_bytes, label)`` pairs, before decoding.

        Args:
            shuffle: training order (row groups permuted per epoch, blocks permuted);
                otherwise the shards' order.
            seed: the run's seed; with ``epoch`` it fixes the order.
            epoch: the epoch whose order to produce (an int or an int64 scalar tensor).

        Returns:
            An unbatched dataset of ``(tf.string, tf.int32)`` scalars (and the teacher
            embedding, ``(128,)`` float32, third, when the input has a teacher).
        """
        blocks = self._blocks()
        epoch_tensor = tf.cast(epoch, tf.int64)
        types = (tf.string, tf.int32) if self.teacher is None else (tf.string, tf.int32, tf.float32)

        def read(block: tf.Tensor) -> tuple[tf.Tensor, ...]:
            columns = tf.py_function(
                lambda b, e: self._read_block(int(b), int(e), shuffle, seed), [block, epoch_tensor], types
            )
            columns[0].set_shape([None])
            columns[1].set_shape([None])
            if len(columns) == 3:
                columns[2].set_shape([None, EMBEDDING_DIM])
            return tuple(columns)

        # Two blocks in flight: one being read while the one before is consumed.
        return tf.data.Dataset.range(blocks).map(read, num_parallel_calls=2, deterministic=True).unbatch()

    def dataset(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int | tf.Tensor = 0,
        drop_remainder: bool = False,
        deterministic: bool = True,
        prefetch: bool = True,
        shard: tuple[int, int] | None = None,
    ) -> tf.data.Dataset:
        """One pass over the split as batches of model inputs.

        Args:
            batch_size: examples per batch (the global batch under a distribution strategy).
            shuffle: training order for ``(seed, epoch)``; otherwise the shards' order.
            seed: the run's seed.
            epoch: the epoch whose order to produce.
            drop_remainder: drop a last, partial batch (training).
            deterministic: keep the order through the parallel decode (reproducible).
            prefetch: end with ``prefetch(AUTOTUNE)``.
            shard: ``(count, index)``: keep every count-th sample of the order from
                ``index`` on, before decoding (a worker's share in multi-worker training).

        Returns:
            Batches of ``(float32 images (B, S, S, 3) in [-1, 1], int32 labels (B,))``; with a
            teacher, the images and ``(B, 128)`` teacher embeddings as the inputs
            ``{"image": ..., "teacher_embedding": ...}`` of `model.distillation_model`.
        """
        size = self.image_size
        samples = self.encoded(shuffle=shuffle, seed=seed, epoch=epoch)
        examples = self.shard_examples(shard)
        if shard is not None:
            samples = samples.shard(*shard)
        images = samples.map(
            lambda image, label, *target: (resize_image(image, size), label, *target),
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )
        batches = images.batch(batch_size, drop_remainder=drop_remainder)
        if self.teacher is None:
            batches = batches.map(lambda x, y: (scale_images(x), y), num_parallel_calls=AUTOTUNE, deterministic=True)
        else:
            batches = batches.map(
                lambda x, y, t: ({INPUT_NAME: scale_images(x), TEACHER_NAME: t}, y),
                num_parallel_calls=AUTOTUNE, deterministic=True,
            )
        # The manifest's count, checked while reading: a shard holding fewer rows of the
        # split than the manifest says fails loudly instead of shortening epochs.
        full, rest = divmod(examples, batch_size)
        steps = full if drop_remainder or not rest else full + 1
        batches = batches.apply(tf.data.experimental.assert_cardinality(steps))
        return batches.prefetch(AUTOTUNE) if prefetch else batches

    def epochs(
        self,
        batch_size: int,
        steps_per_epoch: int,
        *,
        start_epoch: int = 0,
        end_epoch: int,
        seed: int = 0,
        deterministic: bool = True,
        shard: tuple[int, int] | None = None,
    ) -> tf.data.Dataset:
        """The training stream for ``Model.fit(steps_per_epoch=...)``: epochs ``start..end-1``.

        Epoch ``e`` contributes exactly ``steps_per_epoch`` full batches in the order of
        ``dataset(shuffle=True, seed=seed, epoch=e)``, so a run resumed at epoch ``k`` is
        fed what an uninterrupted run would have been fed from epoch ``k`` on.

        Args:
            batch_size: the global batch size.
            steps_per_epoch: batches per epoch (at most ``steps(batch_size, True)``).
            start_epoch: the first epoch to produce (the epoch a resumed run restarts at).
            end_epoch: one past the last epoch.
            seed: the run's seed.
            deterministic: keep a reproducible order through the parallel stages.
            shard: ``(count, index)``: this worker's share of every epoch (`dataset`).

        Returns:
            A dataset of ``(end_epoch - start_epoch) * steps_per_epoch`` batches.
        """
        available = self.shard_examples(shard) // batch_size
        if steps_per_epoch < 1 or steps_per_epoch > available:
            raise ConfigError(
                f"steps_per_epoch={steps_per_epoch} does not fit the {self.split} split "
                f"({self.num_examples} examples make {available} full batches of {batch_size})"
            )
        epochs = max(0, end_epoch - start_epoch)

        def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
            batches = self.dataset(
                batch_size, shuffle=True, seed=seed, epoch=epoch, drop_remainder=True,
                deterministic=deterministic, prefetch=False, shard=shard,
            )
            return batches.take(steps_per_epoch)

        stream = tf.data.Dataset.range(start_epoch, start_epoch + epochs).flat_map(one_epoch)
        stream = stream.apply(tf.data.experimental.assert_cardinality(epochs * steps_per_epoch))
        return stream.prefetch(AUTOTUNE)

    # -- reading -------------------------------------------------------------------------
    def _index(self, paths: list[str]) -> list[RowGroup]:
        groups: list[RowGroup] = []
        for path in paths:
            metadata = self._footer(path)
            self._metadata[path] = metadata
            column = metadata.schema.names.index("split")
            for index in range(metadata.num_row_groups):
                group = metadata.row_group(index)
                stats = group.column(column).statistics
                if stats is not None and stats.has_min_max:
                    low, high = _text(stats.min), _text(stats.max)
                    if not low <= self.split <= high:
                        continue
                    mixed = not low == high == self.split
                else:
                    mixed = True
                groups.append(RowGroup(path, index, group.num_rows, mixed))
        return groups

    def _footer(self, path: str) -> pq.FileMetaData:
        shown = self._location.display(path)
        try:
            with os_errors(path, self._location), self._location.fs.open(path, "rb") as fh:
                metadata = pq.ParquetFile(fh).metadata
        except FileNotFoundError as exc:
            raise IntegrityError(f"shard missing: {shown}") from exc
        except pa.ArrowInvalid as exc:
            raise IntegrityError(f"shard {shown} is unreadable: {exc}") from exc
        missing = [c for c in self._columns if c not in metadata.schema.names]
        if missing:
            raise IntegrityError(f"shard {shown} lacks columns {missing}: not a CURATED shard")
        return metadata

    def _blocks(self) -> int:
        return math.ceil(len(self.row_groups) / self.groups_per_block)

    def _plan(self, shuffle: bool, seed: int, epoch: int) -> list[np.ndarray]:
        """The row groups of each block of an epoch."""
        key = (shuffle, seed, epoch)
        plan = self._plans.get(key)
        if plan is None:
            count = len(self.row_groups)
            order = _rng(seed, epoch).permutation(count) if shuffle else np.arange(count)
            # equal blocks: a short last block would end every epoch on a few row groups
            plan = np.array_split(order, self._blocks())
            self._plans = {key: plan}  # one epoch at a time
        return plan

    def _read_block(self, block: int, epoch: int, shuffle: bool, seed: int) -> tuple[np.ndarray, ...]:
        groups = [self.row_groups[i] for i in self._plan(shuffle, seed, epoch)[block]]
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.read_threads, thread_name_prefix="facescale-read")
        tables = [t for t in self._executor.map(self._read_group, groups) if len(t)]
        if not tables:
            empty = (np.array([], dtype=bytes), np.array([], dtype=np.int32))
            return empty if self.teacher is None else (*empty, np.zeros((0, EMBEDDING_DIM), np.float32))
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        columns: list[np.ndarray] = [
            np.array(table.column("image").to_pylist(), dtype=object),
            table.column("label").to_numpy().astype(np.int32, copy=False),
        ]
        if self.teacher is not None:
            missing = np.zeros(EMBEDDING_DIM, np.float32)
            sources = table.column("source_image_id").to_pylist()
            columns.append(np.stack([self.teacher.get(s, missing) for s in sources]).astype(np.float32, copy=False))
        if shuffle:
            order = _rng(seed, epoch, block).permutation(len(columns[1]))
            columns = [c[order] for c in columns]
        return tuple(columns)

    def _read_group(self, group: RowGroup) -> pa.Table:
        with self._location.fs.open(group.path, "rb") as fh:
            parquet = pq.ParquetFile(fh, metadata=self._metadata[group.path])
            table = parquet.read_row_group(group.index, columns=self._columns)
        if group.mixed:
            table = table.filter(pc.equal(table.column("split"), self.split))
        return table


EXTRA_STREAM = 0x7E  # keys the extra crops' order apart from the split's


class ExtraInput:
    """Unlabelled crops and their teacher targets (``training.teacher_extra``), a fixed number per step.

    Epoch ``e`` takes its crops from permutations of all of them keyed by ``(seed, e,
    EXTRA_STREAM, k)``, ``k = 0, 1, ...`` chained until the epoch has enough: a function of
    ``(seed, epoch)`` only, like the split's order, so a resumed run is fed what an
    uninterrupted one would have been. The crops are held in memory (`teacher.extra_crops`).
    """

    def __init__(self, images: Sequence[bytes], targets: np.ndarray, image_size: int) -> None:
        if not len(images) or len(images) != len(targets):
            raise ConfigError("extra crops need at least one image and one target per image")
        self.images = list(images)
        self.targets = np.asarray(targets, np.float32)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.images)

    def order(self, seed: int, epoch: int, count: int) -> np.ndarray:
        """The first ``count`` crop indices of epoch ``epoch``'s order."""
        rounds = math.ceil(count / len(self))
        chained = [_rng(seed, epoch, EXTRA_STREAM, k).permutation(len(self)) for k in range(rounds)]
        return np.concatenate(chained)[:count]

    def epochs(
        self,
        per_batch: int,
        steps_per_epoch: int,
        *,
        start_epoch: int = 0,
        end_epoch: int,
        seed: int = 0,
        shard: tuple[int, int] | None = None,
    ) -> tf.data.Dataset:
        """Batches of ``per_batch`` decoded crops and their targets for epochs ``start..end-1``.

        Args:
            per_batch: crops per training step.
            steps_per_epoch: steps per epoch (this worker's, with ``shard``).
            start_epoch: the first epoch to produce.
            end_epoch: one past the last epoch.
            seed: the run's seed.
            shard: ``(count, index)``: every count-th crop of the order from ``index`` on (a
                worker's share in multi-worker training).

        Returns:
            ``(end - start) * steps_per_epoch`` batches of ``(float32 (per_batch, S, S, 3) in
            [-1, 1], float32 (per_batch, 128))``.
        """
        count, index = shard or (1, 0)
        wanted = per_batch * steps_per_epoch
        epochs = range(start_epoch, max(start_epoch, end_epoch))
        indices = np.concatenate(
            [self.order(seed, e, wanted * count)[index::count] for e in epochs] or [np.zeros(0, np.int64)]
        )
        images, targets, size = tf.constant(self.images), tf.constant(self.targets), self.image_size
        crops = tf.data.Dataset.from_tensor_slices(indices.astype(np.int64)).map(
            lambda i: (resize_image(tf.gather(images, i), size), tf.gather(targets, i)),
            num_parallel_calls=AUTOTUNE, deterministic=True,
        )
        batches = crops.batch(per_batch, drop_remainder=True).map(
            lambda x, t: (scale_images(x), t), num_parallel_calls=AUTOTUNE, deterministic=True
        )
        return batches.apply(tf.data.experimental.assert_cardinality(len(epochs) * steps_per_epoch))


def with_extra(labelled: tf.data.Dataset, extra: tf.data.Dataset) -> tf.data.Dataset:
    """Each teacher batch of the split with a batch of extra crops appended, and sample weights.

    ``labelled``: ``({"image", "teacher_embedding"}, labels)`` batches (`CuratedInput.epochs`);
    ``extra``: `ExtraInput.epochs` batches, as many. Every output batch is ``(inputs, labels,
    weights)``: the extra crops take label 0 and weight 0 (they teach through the distillation
    loss alone), the labelled rows weight ``(n + m) / n``, so the classification loss, summed
    over the batch and divided by its size, stays the mean over the labelled rows, and the
    weighted metrics count those rows only.
    """

    def join(batch: tuple[dict[str, tf.Tensor], tf.Tensor], more: tuple[tf.Tensor, tf.Tensor]) -> tuple[Any, ...]:
        (inputs, labels), (images, targets) = batch, more
        n, m = tf.shape(labels)[0], tf.shape(targets)[0]
        weights = tf.concat([tf.fill([n], tf.cast(n + m, tf.float32) / tf.cast(n, tf.float32)), tf.zeros([m])], 0)
        joined = {
            INPUT_NAME: tf.concat([inputs[INPUT_NAME], images], 0),
            TEACHER_NAME: tf.concat([inputs[TEACHER_NAME], targets], 0),
        }
        return joined, tf.concat([labels, tf.zeros([m], labels.dtype)], 0), weights

    mixed = tf.data.Dataset.zip((labelled, extra)).map(join, num_parallel_calls=AUTOTUNE, deterministic=True)
    return mixed.prefetch(AUTOTUNE)


def _rng(*key: int) -> np.random.Generator:
    """A generator keyed by integers (negative seeds folded into 64 bits)."""
    return np.random.default_rng([k % 2**64 for k in key])


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
