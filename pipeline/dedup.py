"""Exact and near-duplicate removal: perceptual keys, a multi-index Hamming search, keep/drop decisions.

Three layers, each usable on its own:

* Keys. `hash_image` turns encoded image bytes into a 192-bit key: imagehash's ``phash``
  (32x32 Lanczos, 2-D DCT, the 8x8 lowest frequencies against their median) of the luma and
  of the two chroma channels (Cb, Cr), 64 bits each; `hash_image_keys` adds the keys of five
  inner windows (96% of each side: centre and corners). Two images are near-duplicates when
  their keys, or a window key of one and the key of the other, are within Hamming distance
  ``DEFAULT_MAX_DISTANCE``. `Hasher` does the hashing as a Ray Data batch transform.
  Why, measured on lfw-dev with ``bench/bench_dedup.py`` (original + 2 copies each with some
  of: resize 0.5-0.9x, JPEG q50-85, 2-6% off the borders, brightness +-10%; 13,260 images):
  no single 64-bit hash of the luma comes near the target. Best recall at precision >= 0.99,
  whole photos / face crops: phash 0.58 / 0.59, dhash 0.63 / 0.49, whash and the average
  hash never reach 0.99 (LFW's identically framed portraits of different people come too
  close). phash holds up best on crops: resizing, re-encoding and brightness move it by 0-2
  bits, but a border crop by up to 20, and different photos come within 6. Different photos
  differ in colour layout (background, clothes), which these edits barely move, so the chroma
  phashes separate them (the 192-bit key alone: 0.92 / 0.78); the windows catch the border
  crops: recall 0.996 at precision 0.992 on whole photos and 0.942 at 0.991 on 128px face
  crops, at k = 22. A phash word (nearly) always holds 32 ones, so distances are even.
  A grey image's chroma phashes would be noise; its chroma words are imagehash's ``dhash`` and
  ``dhash_vertical`` of the luma instead.
* Search. `near_duplicate_pairs` finds every near-duplicate pair without comparing all
  pairs: multi-index hashing (Norouzi et al., CVPR 2012). The 192 bits are split into ``m``
  bands; by the pigeonhole principle two keys within distance ``k`` differ by at most
  ``k // m`` bits in at least one band, so the keys are bucketed by each band (a counting-sort
  table) and only keys in buckets within that radius of a query's band are verified.
  `brute_force_pairs` compares all pairs: the baseline and the tests' oracle. At 100k keys
  with 5 windows each, k = 22, the search takes 5-10 s against ~400 s for the brute force.
  `connected_components` and `duplicate_clusters` group pairs with a vectorised union-find.
* Decisions. `resolve` takes one `Record` per image (key, identity, quality, sha256, window
  keys, and for face crops the embedding and the aligned face's key) and returns one
  `Decision` each: within one identity a cluster of exact or near copies keeps its
  best-quality member; a cluster spanning several identities is label noise and loses every
  member. `SameFace` adds, within one identity, copies whose crops the detector drew
  differently. Reason codes are in `REASONS`.

Keys are arrays of shape ``(n, words)`` of uint64, most significant word first (a 1-D array
is one word per key), or Python ints. Clusters are single-linkage (connected components of
the near-duplicate graph).
"""

from __future__ import annotations

import io
import logging
import math
import operator
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, NamedTuple

import imagehash
import numpy as np
from PIL import Image

from .reasons import DEDUP_REASONS, MEANING, Reason

logger = logging.getLogger(__name__)

WORD_BITS = 64
HASH_WORDS = 3
HASH_BITS = WORD_BITS * HASH_WORDS
DEFAULT_MAX_DISTANCE = 22
"""Largest Hamming distance between the keys of near-duplicates (chosen on lfw-dev with bench/bench_dedup.py)."""

REASONS: dict[str, str] = {r: MEANING[r] for r in DEDUP_REASONS}  # dedup's codes and meanings

WINDOW_SIDE = 0.96
"""Side of the inner windows as a fraction of the image's."""
WINDOW_OFFSETS = ((0.02, 0.02), (0.0, 0.0), (0.04, 0.0), (0.0, 0.04), (0.04, 0.04))
"""Top-left corners of the inner windows (fractions of width and height): the centre and the four corners."""

_BASE = 100  # keys are computed on the image resized to this square, where the windows fall on whole pixels
_CHROMA_MIN_STD = 2.0  # chroma standard deviation (0-255, at 32x32) below which a channel counts as constant
_TABLE_BITS = 22  # bands up to this wide are bucketed with a direct-address table, wider ones with a sorted array
_MAX_PROBES = 1 << 16  # band values probed per hash over all bands, at most
_CHUNK_PAIRS = 1 << 22  # candidate pairs expanded at a time (bounds memory at a few hundred MB)
_WORD_MASK = (1 << WORD_BITS) - 1


# ---------------------------------------------------------------------------------------------------------------------
# Hashing


def _bits(value: imagehash.ImageHash) -> int:
    return int.from_bytes(np.packbits(value.hash.reshape(-1)).tobytes(), "big")


# The 8 lowest-frequency rows of the (unnormalised, scipy.fftpack) DCT-II of 32 samples.
_DCT = 2 * np.cos(np.pi * np.outer(np.arange(8), 2 * np.arange(32) + 1) / 64)


def _phashes(pixels: np.ndarray) -> list[int]:
    """imagehash's ``phash`` of each 32x32 grey plane in ``pixels`` (k, 32, 32), in one batched DCT.

    As in imagehash: 2-D DCT, the 8x8 lowest frequencies compared with their median; bit 63
    is the top-left coefficient.
    """
    low = (_DCT @ pixels.astype(np.float64) @ _DCT.T).reshape(len(pixels), 64)
    bits = np.packbits(low > np.median(low, axis=1, keepdims=True), axis=1)
    return [int.from_bytes(row.tobytes(), "big") for row in bits]


def _keys(image: Image.Image, boxes: Sequence[tuple[int, int, int, int]]) -> list[int]:
    """The key of each region of the image (boxes in the ``_BASE`` square; the first is all of it)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    base = rgb.resize((_BASE, _BASE), Image.Resampling.BOX)  # area average: fast, and no aliasing
    planes, greys = [], []
    for box in boxes:
        region = base.resize((32, 32), Image.Resampling.LANCZOS, box=box)
        grey = region.convert("L")
        greys.append(grey)
        planes.append(np.asarray(grey))
        planes.extend(np.asarray(c) for c in region.convert("YCbCr").split()[1:])
    pixels = np.stack(planes)
    flat = pixels[1].std() < _CHROMA_MIN_STD, pixels[2].std() < _CHROMA_MIN_STD  # Cb, Cr of the whole image
    hashes = _phashes(pixels)
    keys = []
    for r, grey in enumerate(greys):
        luma, blue, red = hashes[3 * r : 3 * r + 3]
        if flat[0]:
            blue = _bits(imagehash.dhash(grey))
        if flat[1]:
            red = _bits(imagehash.dhash_vertical(grey))
        keys.append(luma << 2 * WORD_BITS | blue << WORD_BITS | red)
    return keys


def image_key(image: Image.Image) -> int:
    """The 192-bit key of a decoded image: phash of its luma, Cb and Cr channels, most significant first.

    The image is resized to 100x100 (area average) and then to 32x32 (Lanczos; the windows of
    `image_keys` are cut between the two), and each channel is hashed as imagehash's ``phash``
    does. A chroma channel that is nearly constant (a grey image) carries no information and
    its phash would be noise; its word is then imagehash's ``dhash`` (Cb) or ``dhash_vertical``
    (Cr) of the luma instead, so grey images are compared on three views of their luma.
    """
    return _keys(image, [(0, 0, _BASE, _BASE)])[0]


class ImageKeys(NamedTuple):
    """The key of a whole image and the keys of its inner windows (`WINDOW_OFFSETS`)."""

    key: int
    windows: tuple[int, ...]


def image_keys(image: Image.Image) -> ImageKeys:
    """`image_key` of the image and of each of its windows: ``WINDOW_SIDE`` of each side at `WINDOW_OFFSETS`.

    A copy that lost a few percent of its borders is close to one of the original's windows
    (and vice versa), while the whole-image keys of the two can be far apart.
    """
    side = round(WINDOW_SIDE * _BASE)
    boxes = [
        (round(x * _BASE), round(y * _BASE), round(x * _BASE) + side, round(y * _BASE) + side)
        for x, y in WINDOW_OFFSETS
    ]
    key, *windows = _keys(image, [(0, 0, _BASE, _BASE), *boxes])
    return ImageKeys(key, tuple(windows))


def _decode(data: bytes) -> Image.Image | None:
    """The image as RGB, or None when Pillow cannot decode (or convert) it."""
    if not data:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.convert("RGB")  # decodes all of it: truncated data fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None


def hash_image(data: bytes) -> int | None:
    """The 192-bit perceptual key of an encoded image (see `image_key`), or None when it cannot be decoded.

    Args:
        data: encoded image bytes (any format Pillow reads).

    Returns:
        An int in ``[0, 2**192)``, or None.
    """
    image = _decode(data)
    return None if image is None else image_key(image)


def hash_image_keys(data: bytes) -> ImageKeys | None:
    """The key and the window keys of an encoded image (see `image_keys`), or None when it cannot be decoded."""
    image = _decode(data)
    return None if image is None else image_keys(image)


def hamming(a: int, b: int) -> int:
    """The Hamming distance between two keys given as ints."""
    return (a ^ b).bit_count()


class Hasher:
    """Ray Data batch transform: adds each image's key, window keys and a reason code for failures.

    ``ds.map_batches(Hasher, fn_constructor_kwargs={"image_column": "image"})``, or an instance
    called on a ``dict[str, np.ndarray]`` batch of encoded images. Adds ``<hash_column>``, the
    keys as ``(rows, 3)`` uint64 words (most significant first), ``<hash_column>_windows``,
    ``(rows, 5, 3)`` uint64 (with ``windows=True``), and ``<hash_column>_error``: None, or
    ``"undecodable"`` with all words 0.
    """

    def __init__(self, image_column: str = "image", hash_column: str = "phash", *, windows: bool = True) -> None:
        self.image_column = image_column
        self.hash_column = hash_column
        self.windows_column = f"{hash_column}_windows" if windows else None
        self.error_column = f"{hash_column}_error"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = batch[self.image_column]
        keys = np.zeros((len(images), HASH_WORDS), dtype=np.uint64)
        windows = np.zeros((len(images), len(WINDOW_OFFSETS), HASH_WORDS), dtype=np.uint64)
        errors = np.full(len(images), None, dtype=object)
        for row, data in enumerate(images):
            image = _decode(bytes(data)) if data is not None else None
            if image is None:
                errors[row] = Reason.UNDECODABLE
            elif self.windows_column:
                found = image_keys(image)
                keys[row] = as_hashes([found.key], HASH_WORDS)[0]
                windows[row] = as_hashes(found.windows, HASH_WORDS)
            else:
                keys[row] = as_hashes([image_key(image)], HASH_WORDS)[0]
        out = {**batch, self.hash_column: keys, self.error_column: errors}
        if self.windows_column:
            out[self.windows_column] = windows
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Search


def as_hashes(hashes: np.ndarray | Sequence[int], words: int | None = None) -> np.ndarray:
    """Hashes as a C-contiguous ``(n, words)`` uint64 array, most significant word first.

    Accepts a 1-D integer array (one word each; int64 is reinterpreted, not converted), a 2-D
    one, or Python ints (``words`` defaults to what the largest needs, at least one).
    """
    if not isinstance(hashes, np.ndarray) or hashes.dtype == object:
        values = [operator.index(x) for x in hashes]  # ints only: a float would silently lose bits
        if any(v < 0 for v in values):
            raise ValueError("hashes must not be negative")
        needed = max(1, -(-max((v.bit_length() for v in values), default=1) // WORD_BITS))
        words = words or needed
        if needed > words:
            raise ValueError(f"a hash needs {needed} words, more than {words}")
        shifts = [WORD_BITS * (words - 1 - w) for w in range(words)]
        return np.array([[(v >> s) & _WORD_MASK for s in shifts] for v in values], dtype=np.uint64).reshape(-1, words)
    array = hashes
    if array.dtype.kind not in "iu":
        raise TypeError(f"hashes must be integers, got {array.dtype}")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"hashes must be 1-D or 2-D, got shape {array.shape}")
    if words is not None and array.shape[1] != words:
        raise ValueError(f"expected {words} words per hash, got {array.shape[1]}")
    if array.dtype.itemsize != 8:
        array = array.astype(np.int64)
    return np.ascontiguousarray(array).view(np.uint64)


def _empty_pairs() -> np.ndarray:
    return np.empty((0, 2), dtype=np.int64)


def _sorted_unique_pairs(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    codes = np.unique(i.astype(np.int64) * n + j)
    return np.stack([codes // n, codes % n], axis=1)


def _as_windows(windows: np.ndarray | Sequence[Sequence[int]] | None, n: int, words: int) -> np.ndarray:
    """Window keys as ``(n, j, words)`` uint64 (j may be 0)."""
    if windows is None:
        return np.empty((n, 0, words), dtype=np.uint64)
    if isinstance(windows, np.ndarray) and windows.dtype != object:
        array = windows if windows.ndim == 3 else windows[..., None]
        if array.shape[0] != n or array.shape[2] != words:
            raise ValueError(f"windows must have shape ({n}, j, {words}), got {windows.shape}")
        return np.ascontiguousarray(array.astype(np.int64, copy=False) if array.dtype.itemsize != 8 else array).view(
            np.uint64
        )
    rows = [list(w) for w in windows]
    if len(rows) != n or len({len(w) for w in rows}) > 1:
        raise ValueError(f"windows must give the same number of keys for each of the {n} hashes")
    j = len(rows[0]) if rows else 0
    return as_hashes([k for w in rows for k in w], words).reshape(n, j, words)


def _flatten(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(n, j, words)`` window keys as (``(n * j, words)`` keys, the row each belongs to)."""
    n, j, words = windows.shape
    return windows.reshape(n * j, words), np.repeat(np.arange(n), j)


def brute_force_pairs(
    hashes: np.ndarray | Sequence[int],
    max_distance: int,
    *,
    windows: np.ndarray | Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """`near_duplicate_pairs` by comparing every key with every main key: the baseline and the tests' oracle.

    O(n^2 (1 + j)) time for n keys with j windows each, O(n) memory per 1024 keys. Returns an
    int64 array of shape (pairs, 2), rows sorted.
    """
    h = as_hashes(hashes)
    queries, owners = _flatten(_as_windows(windows, len(h), h.shape[1]))
    return _sorted_unique_pairs(*_brute(h, queries, owners, max_distance), len(h))


def _brute(
    h: np.ndarray, queries: np.ndarray, owners: np.ndarray, max_distance: int, block: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of main keys, and (owner, main) pairs of ``queries``, within the distance, as (i, j) with i < j."""
    n, words = h.shape
    columns = [np.ascontiguousarray(h[:, w]) for w in range(words)]
    query_columns = [np.ascontiguousarray(queries[:, w]) for w in range(words)]
    out_i: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    out_j: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    for start in range(0, n, block):  # main keys against the main keys after them
        stop = min(start + block, n)
        dist = np.zeros((stop - start, n - start), dtype=np.uint16)
        for column in columns:
            dist += np.bitwise_count(column[start:stop, None] ^ column[None, start:])
        ii, jj = np.nonzero(dist <= max_distance)
        keep = ii < jj  # both offset by start
        out_i.append(ii[keep] + start)
        out_j.append(jj[keep] + start)
    for start in range(0, len(queries), block):  # window keys against every main key but their own
        stop = min(start + block, len(queries))
        dist = np.zeros((stop - start, n), dtype=np.uint16)
        for query_column, column in zip(query_columns, columns, strict=True):
            dist += np.bitwise_count(query_column[start:stop, None] ^ column[None, :])
        qq, jj = np.nonzero(dist <= max_distance)
        ii = owners[qq + start]
        keep = ii != jj
        out_i.append(np.minimum(ii, jj)[keep])
        out_j.append(np.maximum(ii, jj)[keep])
    return np.concatenate(out_i), np.concatenate(out_j)


def _band_widths(bits: int, bands: int) -> list[int]:
    base, extra = divmod(bits, bands)
    return [base + 1 if b < extra else base for b in range(bands)]


def _probes(width: int, radius: int) -> int:
    return sum(math.comb(width, r) for r in range(min(radius, width) + 1))


# Nanoseconds per unit of work, measured at 100k uniform random keys on the 2-core dev machine: one
# band value probed for one key (a table lookup), one candidate pair verified, one pair compared by
# the brute force; the last two as (fixed, per word).
_COST_PROBE = 15.0
_COST_CANDIDATE = (4.0, 5.0)
_COST_BRUTE = (3.0, 2.5)


def search_cost(n: int, max_distance: int, bands: int, words: int = HASH_WORDS, queries: int = 0) -> float:
    """Estimated nanoseconds of `near_duplicate_pairs` for ``n`` uniform random keys (inf: not possible).

    Per band every main key probes, for each mask (half of them for the main keys, which meet
    each other from both ends), the band values within radius ``k // bands`` of its own; each
    probe finds about ``n / 2^width`` candidates to verify. ``queries`` window keys probe too.
    """
    widths = _band_widths(WORD_BITS * words, bands)
    radius = max_distance // bands
    if max(widths) > WORD_BITS or sum(_probes(w, radius) for w in widths) > _MAX_PROBES:
        return math.inf
    probing = n / 2 + queries
    cost = 0.0
    for width in widths:
        probes = _probes(width, radius)
        lookup = 1.0 if width <= _TABLE_BITS else math.log2(max(n, 2)) / 4  # a binary search, not a table read
        candidates = probes * probing * n / 2.0**width
        cost += probes * probing * lookup * _COST_PROBE + candidates * (_COST_CANDIDATE[0] + _COST_CANDIDATE[1] * words)
    return cost


def brute_force_cost(n: int, words: int = HASH_WORDS, queries: int = 0) -> float:
    """Estimated nanoseconds of `brute_force_pairs` for ``n`` keys and ``queries`` window keys."""
    return (n * (n - 1) / 2 + queries * n) * (_COST_BRUTE[0] + _COST_BRUTE[1] * words)


def choose_bands(n: int, max_distance: int, words: int = HASH_WORDS, queries: int = 0) -> int:
    """The number of bands (``words`` .. k+1) with the lowest `search_cost`."""
    most = max(words, min(max_distance + 1, WORD_BITS * words))
    return min(range(words, most + 1), key=lambda m: search_cost(n, max_distance, m, words, queries))


def _flip_masks(width: int, radius: int) -> list[int]:
    masks = [0]
    for r in range(1, min(radius, width) + 1):
        masks.extend(sum(1 << b for b in bits) for bits in combinations(range(width), r))
    return masks


def _band_values(h: np.ndarray, start: int, width: int) -> np.ndarray:
    """Bits ``start .. start + width - 1`` (0 = most significant bit of word 0) of every key, as uint64."""
    word, offset = divmod(start, WORD_BITS)
    end = offset + width
    if end <= WORD_BITS:
        return (h[:, word] >> np.uint64(WORD_BITS - end)) & np.uint64((1 << width) - 1)
    low_bits = end - WORD_BITS  # the band runs on into the next word
    high = h[:, word] & np.uint64((1 << (WORD_BITS - offset)) - 1)
    return (high << np.uint64(low_bits)) | (h[:, word + 1] >> np.uint64(WORD_BITS - low_bits))


class _Band:
    """One band of the main keys: the keys sorted by its value, and the run of each value found by lookup."""

    def __init__(self, h: np.ndarray, start: int, width: int) -> None:
        self.start, self.width = start, width
        values = _band_values(h, start, width)
        self.order = np.argsort(values, kind="stable")
        self.values = values[self.order]
        self.words = [np.ascontiguousarray(h[self.order, w]) for w in range(h.shape[1])]
        self.direct = width <= _TABLE_BITS
        if self.direct:
            self.counts = np.bincount(self.values.astype(np.intp), minlength=1 << width)
            self.starts = np.cumsum(self.counts) - self.counts

    def lookup(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first sorted position, count) of the keys whose band value equals each of ``values``."""
        if self.direct:
            index = values.astype(np.intp)
            return self.starts[index], self.counts[index]
        lo = np.searchsorted(self.values, values, side="left")
        return lo, np.searchsorted(self.values, values, side="right") - lo

    def close(
        self,
        query_words: list[np.ndarray],
        rows: np.ndarray,
        starts: np.ndarray,
        counts: np.ndarray,
        max_distance: int,
    ) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """(query row, sorted position) for the ``counts[r]`` keys from ``starts[r]`` within ``max_distance``.

        Candidates are expanded a bounded chunk at a time; rows ascend and the positions of a
        row are contiguous, so the gathers run over nearly contiguous memory.
        """
        hit = counts > 0
        rows, starts, counts = rows[hit], starts[hit], counts[hit]
        total = np.cumsum(counts)
        begin = 0
        while begin < len(rows):
            base = int(total[begin - 1]) if begin else 0
            end = max(int(np.searchsorted(total, base + _CHUNK_PAIRS, side="right")), begin + 1)
            reps = counts[begin:end]
            size = int(total[end - 1]) - base
            a = np.repeat(rows[begin:end], reps)
            b = np.repeat(starts[begin:end] - (total[begin:end] - reps - base), reps) + np.arange(size)
            dist: np.ndarray = np.zeros(size, dtype=np.uint8 if len(self.words) < 4 else np.uint16)
            for query_word, word in zip(query_words, self.words, strict=True):
                dist += np.bitwise_count(query_word[a] ^ word[b])
            close = np.flatnonzero(dist <= max_distance)
            yield a[close], b[close]
            begin = end


def _search(
    h: np.ndarray, queries: np.ndarray, owners: np.ndarray, max_distance: int, bands: int
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-index search: pairs of main keys, and (owner, main) pairs of ``queries``, as (i, j), i < j, repeats."""
    n, words = h.shape
    radius = max_distance // bands
    query_words = [np.ascontiguousarray(queries[:, w]) for w in range(words)]
    query_rows = np.arange(len(queries))
    positions = np.arange(n)
    found_i: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    found_j: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    start = 0
    for width in _band_widths(WORD_BITS * words, bands):
        band = _Band(h, start, width)
        start += width
        masks = _flip_masks(width, radius)

        def main_pairs(rows: np.ndarray, starts: np.ndarray, counts: np.ndarray, band: _Band = band) -> None:
            for a, b in band.close(band.words, rows, starts, counts, max_distance):
                found_i.append(band.order[a])
                found_j.append(band.order[b])

        # main keys with equal band values: each position meets the later positions of its run
        first, count = band.lookup(band.values)
        main_pairs(positions, positions + 1, first + count - positions - 1)
        # values that differ by a mask find each other from both ends: query only from the end
        # where the mask's top bit is 0, so every pair is met once per mask
        below: dict[int, np.ndarray] = {}
        for mask in masks[1:]:
            top = mask.bit_length() - 1
            if top not in below:
                below[top] = np.flatnonzero((band.values & np.uint64(1 << top)) == 0)
            query = below[top]
            main_pairs(query, *band.lookup(band.values[query] ^ np.uint64(mask)))
        # window keys probe every mask
        if len(queries):
            values = _band_values(queries, band.start, width)
            for mask in masks:
                starts, counts = band.lookup(values ^ np.uint64(mask))
                for q, b in band.close(query_words, query_rows, starts, counts, max_distance):
                    found_i.append(owners[q])
                    found_j.append(band.order[b])
    i, j = np.concatenate(found_i), np.concatenate(found_j)
    keep = i != j
    return np.minimum(i, j)[keep], np.maximum(i, j)[keep]


def near_duplicate_pairs(
    hashes: np.ndarray | Sequence[int],
    max_distance: int,
    *,
    windows: np.ndarray | Sequence[Sequence[int]] | None = None,
    bands: int | None = None,
) -> np.ndarray:
    """Every pair ``(i, j)``, ``i < j``, of near-duplicates, found by multi-index hashing.

    ``i`` and ``j`` are near-duplicates when their keys are within Hamming distance
    ``max_distance``, or (with ``windows``) when a window key of one is within it of the
    other's key. The result equals `brute_force_pairs`'s without comparing all pairs: for ``n``
    roughly uniform keys the work per band is about ``n * probes + n^2 * probes / 2^width``.
    When ``bands`` is not given and no band count is estimated to beat comparing all pairs
    (a large ``max_distance``, a small ``n``), this compares all pairs. A group of ``g``
    identical keys yields all its ``g (g - 1) / 2`` pairs (`duplicate_clusters` groups them
    without listing those).

    Args:
        hashes: n keys (see `as_hashes`).
        max_distance: the largest Hamming distance reported.
        windows: optional window keys of each image, ``(n, j, words)`` (see `hash_windows`).
        bands: how many bands to split the bits into (at least one per word); `choose_bands` when None.

    Returns:
        An int64 array of shape (pairs, 2), rows sorted.

    Raises:
        ValueError: ``max_distance`` or ``bands`` out of range, or so few bands that a key
            would probe more than 65536 band values.
    """
    h = as_hashes(hashes)
    queries, owners = _flatten(_as_windows(windows, len(h), h.shape[1]))
    return _sorted_unique_pairs(*_find(h, queries, owners, max_distance, bands), len(h))


def _find(
    h: np.ndarray, queries: np.ndarray, owners: np.ndarray, max_distance: int, bands: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Checks the arguments, picks the bands, and runs `_search` (or `_brute` where that is cheaper)."""
    n, words = h.shape
    bits = WORD_BITS * words
    if not 0 <= max_distance <= bits:
        raise ValueError(f"max_distance must be within 0..{bits}, got {max_distance}")
    if n < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    if bands is None:
        bands = choose_bands(n, max_distance, words, len(queries))
        if search_cost(n, max_distance, bands, words, len(queries)) >= brute_force_cost(n, words, len(queries)):
            return _brute(h, queries, owners, max_distance)
    if not words <= bands <= bits:
        raise ValueError(f"bands must be within {words}..{bits} for {words}-word keys, got {bands}")
    if math.isinf(search_cost(n, max_distance, bands, words)):
        raise ValueError(f"{bands} bands at distance {max_distance} need over {_MAX_PROBES} probes per key")
    return _search(h, queries, owners, max_distance, bands)


def connected_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Component labels ``0..c-1`` of ``n`` nodes joined by ``pairs`` (shape (m, 2)).

    Labels are numbered by each component's smallest node, so the result does not depend on
    the order of the pairs. Vectorised union-find: hook roots onto the smaller root, then
    jump pointers until every node points at its root; repeat until no edge joins two roots.
    """
    parent = np.arange(n)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            break
        lo, hi = np.minimum(ra[differ], rb[differ]), np.maximum(ra[differ], rb[differ])
        np.minimum.at(parent, hi, lo)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    _, labels = np.unique(parent, return_inverse=True)
    return labels.astype(np.int64)


def duplicate_clusters(
    hashes: np.ndarray | Sequence[int],
    max_distance: int,
    *,
    windows: np.ndarray | Sequence[Sequence[int]] | None = None,
    bands: int | None = None,
) -> np.ndarray:
    """Cluster labels (connected components of the `near_duplicate_pairs` graph), numbered by first appearance.

    Identical keys are collapsed before the search (their windows all still probe), so a
    large group of equal keys costs nothing extra, unlike listing its pairs.
    """
    h = as_hashes(hashes)
    if len(h) == 0:
        return np.empty(0, dtype=np.int64)
    queries, owners = _flatten(_as_windows(windows, len(h), h.shape[1]))
    distinct, inverse = np.unique(h, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    i, j = _find(distinct, queries, inverse[owners], max_distance, bands)
    labels = connected_components(len(distinct), np.stack([i, j], axis=1))
    return _renumber(labels[inverse])


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Labels numbered in order of first appearance, so they do not depend on hash values."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


# ---------------------------------------------------------------------------------------------------------------------
# Decisions


@dataclass(frozen=True)
class Record:
    """One image as dedup sees it.

    Attributes:
        key: a unique id (the sample or image id).
        identity: the person the image is filed under.
        phash: the image's key from `hash_image` (an int); None when the image is undecodable.
        quality: higher is better (e.g. sharpness); decides which copy is kept (NaN counts as worst).
        sha256: the hex digest of the bytes, when known: equal digests are exact duplicates.
        windows: the window keys from `hash_image_keys`, when known (they find border-cropped copies).
        embedding: the face embedding, when known (`SameFace` compares them within one identity).
        face_key: the key of the aligned face, when known (`SameFace` compares them within one identity).
    """

    key: str
    identity: str
    phash: int | None
    quality: float = 0.0
    sha256: str | None = None
    windows: tuple[int, ...] = ()
    embedding: Sequence[float] | None = None
    face_key: int | None = None


@dataclass(frozen=True)
class SameFace:
    """The second near-duplicate rule: one face, one photo, however differently each copy was cropped.

    The keys alone miss copies whose face box the detector drew a little differently (another
    size of the photo, a scene around it, a border cut off): the crops then differ by a shift
    and a scale that move their keys 24-52 bits apart. Two records of one identity are
    near-duplicates too when

    * the keys of their *aligned* faces (`image_key` of the face mapped onto dlib's canonical
      face by its five landmarks: the shift and scale undone) lie within ``max_aligned_bits``, or
    * their face embeddings lie within ``max_distance`` (Euclidean) and their keys within
      ``max_bits``: copies 0.07-0.18 apart, where photos of one person that are not the same
      photo lie 0.15 and more apart, and the few under 0.18 (burst shots: near-identical frames
      of one event) mostly have keys further apart than 56 bits.

    Measured on the demo web's crops, several engines' copies of each photo among them (3,243
    crops; pairs of one identity made from one photo against pairs that are not): the keys
    alone find 96.0% of the first (8 false pairs of 110,418); adding the embedding test, 97.6%
    (12 false pairs); adding the aligned keys too, 98.7% (13 false pairs). The thresholds were
    read off these pairs and the single-engine demo's.
    """

    max_distance: float = 0.18
    max_bits: int = 56
    max_aligned_bits: int = 24


@dataclass(frozen=True)
class Decision:
    """What happens to one record.

    Attributes:
        key, identity: the record's.
        keep: whether the image stays.
        reason: None when kept, else a key of `REASONS`.
        kept: for ``duplicate`` / ``near_duplicate``, the key of the copy that was kept.
        identities: the identities the record's duplicate cluster spans (sorted; empty when it has none).
        cluster: the keys of the record's duplicate cluster (sorted; empty when it has none).
    """

    key: str
    identity: str
    keep: bool
    reason: str | None = None
    kept: str | None = None
    identities: tuple[str, ...] = ()
    cluster: tuple[str, ...] = ()


def resolve(
    records: Iterable[Record], max_distance: int = DEFAULT_MAX_DISTANCE, same_face: SameFace | None = None
) -> list[Decision]:
    """Keep or drop every record: one decision per record, in input order.

    Records are joined when their sha256 digests are equal or they are near-duplicates (see
    `near_duplicate_pairs`: keys, or a window key and a key, within ``max_distance``; with
    ``same_face``, also the records of one identity that rule joins, `same_face_pairs`); each
    connected cluster is decided as a whole:

    * all in one identity: the member with the highest quality (ties: the smallest key) is
      kept, the others are dropped as ``duplicate`` (same sha256 as the kept one) or
      ``near_duplicate``, pointing at the kept key;
    * spanning two or more identities: the same photo under several names is label noise,
      so every member is dropped as ``cross_identity_duplicate`` with the identities listed.

    Records without a key are dropped as ``undecodable``. The decisions depend on the set
    of records, not on their order. All records are searched together (clusters cross
    identities), so this runs on one machine: a few hundred bytes per record.

    Raises:
        ValueError: two records share a key.
    """
    items = list(records)
    repeated = [key for key, count in Counter(r.key for r in items).items() if count > 1]
    if repeated:
        raise ValueError(f"record keys must be unique: {sorted(repeated)[:5]} repeat")
    hashed = np.array([i for i, r in enumerate(items) if r.phash is not None], dtype=np.int64)
    pairs = [_empty_pairs()]
    if len(hashed):
        keys = as_hashes([items[i].phash for i in hashed], HASH_WORDS)
        width = max(len(items[i].windows) for i in hashed)
        # records with fewer windows are padded with their own key, which adds nothing
        padded = [[*items[i].windows, *[items[i].phash] * (width - len(items[i].windows))] for i in hashed]
        window_keys = _as_windows(padded if width else None, len(hashed), HASH_WORDS)
        labels = duplicate_clusters(keys, max_distance, windows=window_keys)
        order = np.argsort(labels, kind="stable")  # chain each cluster's members
        same = labels[order[1:]] == labels[order[:-1]]
        pairs.append(hashed[np.stack([order[:-1][same], order[1:][same]], axis=1)])
        if same_face is not None:
            pairs.append(hashed[same_face_pairs([items[i] for i in hashed], same_face, keys, window_keys)])
    first_with: dict[str, int] = {}
    for i in hashed.tolist():
        digest = items[i].sha256
        if digest is not None:
            pairs.append(np.array([[first_with.setdefault(digest, i), i]], dtype=np.int64))
    labels = connected_components(len(items), np.concatenate(pairs))

    clusters: dict[int, list[int]] = {}
    for i in hashed.tolist():
        clusters.setdefault(int(labels[i]), []).append(i)
    decisions = {
        i: Decision(r.key, r.identity, False, Reason.UNDECODABLE) for i, r in enumerate(items) if r.phash is None
    }
    for members in clusters.values():
        decisions.update(_decide([items[i] for i in members], members))
    counts = Counter(d.reason for d in decisions.values() if not d.keep)
    logger.info("dedup: %d records, %d dropped %s", len(items), sum(counts.values()), dict(sorted(counts.items())))
    return [decisions[i] for i in range(len(items))]


def key_distances(keys: np.ndarray, windows: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The near-duplicate distance of each pair (i, j): between the keys, or a window of one and the key of the other.

    ``keys`` is ``(n, words)``, ``windows`` ``(n, j, words)`` (j may be 0), both uint64.
    """
    dist = np.bitwise_count(keys[i] ^ keys[j]).sum(axis=-1)
    if windows.shape[1]:
        dist = np.minimum(dist, np.bitwise_count(windows[i] ^ keys[j][:, None]).sum(axis=-1).min(axis=1))
        dist = np.minimum(dist, np.bitwise_count(windows[j] ^ keys[i][:, None]).sum(axis=-1).min(axis=1))
    return dist


def same_face_pairs(
    records: Sequence[Record], rule: SameFace, keys: np.ndarray | None = None, windows: np.ndarray | None = None
) -> np.ndarray:
    """Pairs of records of one identity that `SameFace` joins: ``(pairs, 2)`` int64, rows sorted, i < j.

    A record takes part in each test it has the data for (an aligned-face key; an embedding
    and a key). Each identity is searched on its own: its aligned keys with
    `near_duplicate_pairs`, its embeddings all against all (blocks of 1024 rows: a few MB), so
    the cost grows with the square of the largest identity, not of the whole collection.
    ``keys`` and ``windows`` (``(n, words)`` and ``(n, j, words)`` uint64, as `resolve` has
    them) save building them again from the records.
    """
    if keys is None:
        keys = as_hashes([r.phash or 0 for r in records], HASH_WORDS)
    if windows is None:
        width = max((len(r.windows) for r in records), default=0)
        padded = [[*r.windows, *[r.phash or 0] * (width - len(r.windows))] for r in records]
        windows = _as_windows(padded if width else None, len(records), HASH_WORDS)
    groups: dict[str, list[int]] = {}
    aligned: dict[str, list[tuple[int, int]]] = {}
    for i, r in enumerate(records):
        if r.phash is not None and r.embedding is not None and len(r.embedding):
            groups.setdefault(r.identity, []).append(i)
        if r.face_key is not None:
            aligned.setdefault(r.identity, []).append((i, r.face_key))
    out = [_empty_pairs()]
    for faces_of in aligned.values():  # the search picks multi-index or all pairs by the identity's size
        rows = np.asarray([i for i, _ in faces_of], dtype=np.int64)
        faces = as_hashes([face for _, face in faces_of], HASH_WORDS)
        out.append(rows[near_duplicate_pairs(faces, rule.max_aligned_bits)])
    found = [_empty_pairs()]
    for members in groups.values():
        if len(members) < 2:
            continue
        rows = np.asarray(members, dtype=np.int64)
        vectors = np.asarray([records[i].embedding for i in members], dtype=np.float64)
        finite = np.isfinite(vectors).all(axis=1)
        rows, vectors = rows[finite], vectors[finite]
        norms = (vectors**2).sum(axis=1)
        for start in range(0, len(rows), 1024):
            block = vectors[start : start + 1024]
            squared = norms[start : start + 1024, None] + norms[None, :] - 2 * block @ vectors.T
            a, b = np.nonzero(squared <= rule.max_distance**2)
            a += start
            keep = a < b
            found.append(np.stack([rows[a[keep]], rows[b[keep]]], axis=1))
    pairs = np.concatenate(found)
    out.append(pairs[key_distances(keys, windows, pairs[:, 0], pairs[:, 1]) <= rule.max_bits])
    return np.unique(np.concatenate(out), axis=0)


def _decide(members: list[Record], rows: list[int]) -> dict[int, Decision]:
    """The decisions for one cluster of records."""
    if len(members) == 1:
        return {rows[0]: Decision(members[0].key, members[0].identity, True)}
    cluster = tuple(sorted(r.key for r in members))
    identities = tuple(sorted({r.identity for r in members}))
    if len(identities) > 1:
        reason = Reason.CROSS_IDENTITY_DUPLICATE
        return {
            row: Decision(r.key, r.identity, False, reason, None, identities, cluster)
            for row, r in zip(rows, members, strict=True)
        }
    best = min(members, key=lambda r: (-_quality(r.quality), r.key))
    out = {}
    for row, r in zip(rows, members, strict=True):
        if r is best:
            out[row] = Decision(r.key, r.identity, True, None, None, identities, cluster)
        else:
            reason = Reason.DUPLICATE if r.sha256 is not None and r.sha256 == best.sha256 else Reason.NEAR_DUPLICATE
            out[row] = Decision(r.key, r.identity, False, reason, best.key, identities, cluster)
    return out


def _quality(value: Any) -> float:
    quality = float(value)
    return -math.inf if math.isnan(quality) else quality
