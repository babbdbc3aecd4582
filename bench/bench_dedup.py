"""Near-duplicate detection: quality on lfw-dev copies, and multi-index search vs brute force at 100k keys.

(1) Quality. Every lfw-dev photo (an "original") gets ``--copies`` modified copies, each with a
random non-empty subset of: resize to 0.5-0.9x (and back to full size half of the time), JPEG
re-encode at quality 50-85, 2-6% of each side's length cut off the borders (split unevenly
between the two ends), brightness +-3-10%. An original and its copies form a family. Every
image is hashed with facescale's `hash_image_keys`, all near-duplicate pairs within distance
k are found, and a pair is true when both images are of one family: recall = true pairs
found / all family pairs, precision = true pairs / reported pairs. False pairs are split into
same-identity ones (mostly LFW's own burst shots: near-identical frames of one event) and
cross-identity ones. "cluster R" is the share of copies that end up in their original's
cluster; "no crop" / "crop" the share of original-copy pairs found among copies without /
with a border crop. Done on the whole 250x250 photos and on face crops: the central 150x150
region (scaled with the copy), resized to 128x128, JPEG quality 90, as curation hashes
detector crops (a copy with uneven borders has its box moved by up to 5% of its side, like
detector jitter). Printed for facescale's rule (192-bit key + window keys), for the key
without windows, and for 64-bit luma phash alone (``--compare`` adds imagehash's dhash,
whash and average hash); ``--grey`` turns every photo grey first (the key's fallback for
colourless images). ``--same-face`` embeds every face crop with dlib (as curation does) and
adds facescale's second rule on crops (`dedup.SameFace`: one identity; the aligned faces' keys
within 24 bits, or embeddings within 0.18 and keys within 56 bits) to the first: the table
"192-bit key + windows + same face". Pair precision falls as a collection grows (false pairs
grow with the square of its size, true ones linearly): the figures hold for lfw-dev's 4,420
photos.

(2) Speed. 100k keys with 5 window keys each: the real keys of (1) tiled with random bit
flips, and uniform random keys with 5% planted near-duplicates. `near_duplicate_pairs` runs
on all of them; `brute_force_pairs` on a 10k subsample, extrapolated quadratically to 100k
when the full run would take over a minute (said so in the output). Both must agree on the
subsample.

Run:  .venv/bin/python bench/bench_dedup.py [--limit N] [--compare] [--grey] [--same-face] [--n 100000] [--skip-speed]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image, ImageEnhance

from facescale.pipeline import dedup

REPO = Path(__file__).resolve().parents[1]
MODIFICATIONS = ("resize", "jpeg", "crop", "bright")
CROP_BOX, CROP_SIDE = 150, 128
WINDOWS = len(dedup.WINDOW_OFFSETS)


@dataclass
class Family:
    """An original (index 0) and its copies: per representation, one key row per image."""

    identity: str
    mods: list[tuple[str, ...]]  # per copy
    keys: dict[str, list[list[int]]]  # representation -> per image: [key, *windows, *other hashes]
    faces: list[tuple[np.ndarray | None, int | None]]  # per face crop with --same-face: (embedding, aligned key)


def _encode(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def modify(image: Image.Image, mods: tuple[str, ...], rng: random.Random) -> tuple[bytes, float]:
    """A copy with the given modifications: (JPEG bytes, its scale relative to the original)."""
    w, h = image.size
    scale = 1.0
    if "crop" in mods:
        fx, fy, ax, ay = rng.uniform(0.02, 0.06), rng.uniform(0.02, 0.06), rng.random(), rng.random()
        left, top = round(w * fx * ax), round(h * fy * ay)
        right, bottom = w - round(w * fx * (1 - ax)), h - round(h * fy * (1 - ay))
        image = image.crop((left, top, right, bottom))
    if "bright" in mods:
        image = ImageEnhance.Brightness(image).enhance(1 + rng.choice((-1, 1)) * rng.uniform(0.03, 0.10))
    if "resize" in mods:
        factor = rng.uniform(0.5, 0.9)
        size = image.size
        image = image.resize((max(1, round(size[0] * factor)), max(1, round(size[1] * factor))), Image.BILINEAR)
        if rng.random() < 0.5:
            image = image.resize(size, Image.BILINEAR)
        scale *= image.size[0] / size[0]
    quality = rng.randint(50, 85) if "jpeg" in mods else 95
    return _encode(image, quality), scale


def face_crop(data: bytes, scale: float) -> bytes:
    """The central CROP_BOX square (scaled like the copy) resized to CROP_SIDE, as a JPEG: a stand-in for a face crop.

    A copy that lost more of one border than the other has its centre, and so this box, moved
    against the content by up to 3% of the photo: the detector jitter between copies.
    """
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    side = min(round(CROP_BOX * scale), w, h)
    left, top = (w - side) // 2, (h - side) // 2
    box = image.crop((left, top, left + side, top + side)).resize((CROP_SIDE, CROP_SIDE), Image.BILINEAR)
    return _encode(box, 90)


def _int(value: imagehash.ImageHash) -> int:
    return int.from_bytes(np.packbits(value.hash.reshape(-1)).tobytes(), "big")


def _hashes(data: bytes, compare: bool) -> list[int]:
    """[key, *window keys] and, with ``compare``, imagehash's dhash, whash and average hash."""
    keys = dedup.hash_image_keys(data)
    assert keys is not None
    if not compare:
        return [keys.key, *keys.windows]
    image = Image.open(io.BytesIO(data))
    image.load()
    other = [_int(imagehash.dhash(image)), _int(imagehash.whash(image)), _int(imagehash.average_hash(image))]
    return [keys.key, *keys.windows, *other]


_EMBEDDER: list[Any] = []  # one FaceEmbedder per worker process, made on first use


def _face(data: bytes) -> tuple[np.ndarray | None, int | None]:
    """The crop's embedding and its aligned face's key, as curation's prepare step makes them."""
    from facescale.pipeline.embeddings import FaceEmbedder, decode_rgb

    if not _EMBEDDER:
        _EMBEDDER.append(FaceEmbedder())
    rgb = decode_rgb(data)
    vector, chip = _EMBEDDER[0].embed_and_align(rgb) if rgb is not None else (None, None)
    return vector, None if chip is None else dedup.image_key(Image.fromarray(chip))


def make_family(args: tuple[int, Path, int, int, bool, bool, bool]) -> Family:
    index, path, copies, seed, compare, grey, same_face = args
    rng = random.Random(seed * 1_000_003 + index)
    data = path.read_bytes()
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if grey:
        image = image.convert("L").convert("RGB")
        data = _encode(image, 95)
    whole, crops, mods = [data], [face_crop(data, 1.0)], []
    for _ in range(copies):
        chosen = tuple(m for m in MODIFICATIONS if rng.random() < 0.5) or (rng.choice(MODIFICATIONS),)
        copy, scale = modify(image, chosen, rng)
        whole.append(copy)
        crops.append(face_crop(copy, scale))
        mods.append(chosen)
    return Family(
        path.parent.name,
        mods,
        {"whole": [_hashes(d, compare) for d in whole], "crop": [_hashes(d, compare) for d in crops]},
        [_face(d) for d in crops] if same_face else [],
    )


@dataclass
class Scores:
    k: int
    reported: int
    true_found: int
    false_same: int
    false_cross: int
    recall: float
    precision: float
    by_mod: dict[str, float]
    cluster_recall: float


def _distance(keys: np.ndarray, windows: np.ndarray | None, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The distance that makes i and j near-duplicates: keys, or a window of one and the key of the other."""
    none = np.empty((len(keys), 0, keys.shape[1]), dtype=np.uint64)
    return dedup.key_distances(keys, none if windows is None else windows, i, j)


def score(
    keys: np.ndarray,
    windows: np.ndarray | None,
    family: np.ndarray,
    identity: np.ndarray,
    mods: list[tuple[str, ...]],
    ks: list[int],
    extra: np.ndarray | None = None,
) -> list[Scores]:
    """Pair metrics at every k in ks (one search at the largest k, thresholded for the rest).

    ``extra``: pairs (i < j) another rule finds whatever k is (`dedup.same_face_pairs`), added at every k.
    """
    pairs = dedup.near_duplicate_pairs(keys, max(ks), windows=windows)
    dist = _distance(keys, windows, pairs[:, 0], pairs[:, 1])
    if extra is not None and len(extra):
        n = len(keys)
        codes = pairs[:, 0] * n + pairs[:, 1]
        added = extra[~np.isin(extra[:, 0] * n + extra[:, 1], codes)]
        pairs = np.concatenate([pairs, added])
        dist = np.concatenate([dist, np.zeros(len(added), dtype=dist.dtype)])  # found at every k
    i, j = pairs[:, 0], pairs[:, 1]
    true = family[i] == family[j]
    same_identity = identity[i] == identity[j]
    sizes = np.bincount(family)
    all_true = int((sizes * (sizes - 1) // 2).sum())
    # original-copy pairs: originals are the first row of each family
    first = np.flatnonzero(np.r_[True, family[1:] != family[:-1]])
    copy_rows = np.flatnonzero(np.r_[False, family[1:] == family[:-1]])
    originals = first[family[copy_rows]]
    copy_dist = _distance(keys, windows, originals, copy_rows)
    if extra is not None and len(extra):  # an original-copy pair the other rule finds is found at every k
        found = np.isin(originals * len(keys) + copy_rows, extra[:, 0] * len(keys) + extra[:, 1])
        copy_dist = np.where(found, 0, copy_dist)
    cropped = np.array(["crop" in c for c in mods])
    out = []
    for k in ks:
        hit = dist <= k
        tp = int((hit & true).sum())
        fs, fc = int((hit & ~true & same_identity).sum()), int((hit & ~true & ~same_identity).sum())
        by_mod = {"no crop": float((copy_dist[~cropped] <= k).mean()), "crop": float((copy_dist[cropped] <= k).mean())}
        labels = dedup.connected_components(len(keys), pairs[hit])
        cluster_recall = float((labels[copy_rows] == labels[originals]).mean())
        reported = int(hit.sum())
        out.append(Scores(k, reported, tp, fs, fc, tp / all_true, tp / max(reported, 1), by_mod, cluster_recall))
    return out


def print_table(title: str, rows: list[Scores], chosen: int | None) -> None:
    print(f"\n{title}")
    head = ("k", "pairs", "recall", "prec", "F same", "F cross", "cluster R", "no crop", "crop")
    print("  {:>3s} {:>7s} {:>7s} {:>7s} {:>7s} {:>7s} {:>9s} {:>7s} {:>7s}".format(*head))
    for s in rows:
        mark = " <- chosen" if s.k == chosen else ""
        print(
            f"  {s.k:3d} {s.reported:7d} {s.recall:7.4f} {s.precision:7.4f} {s.false_same:7d} {s.false_cross:7d}"
            f" {s.cluster_recall:9.4f} {s.by_mod['no crop']:7.4f} {s.by_mod['crop']:7.4f}{mark}"
        )


def print_verdict(rows: list[Scores], k: int) -> None:
    """The best recall at precision >= 0.99, and the figures at the chosen ``k`` when the table has it."""
    print("  " + best_at_precision(rows))
    chosen = next((s for s in rows if s.k == k), None)
    if chosen is not None:
        print(f"  at k={k}: recall {chosen.recall:.4f} precision {chosen.precision:.4f}")


def best_at_precision(rows: list[Scores], target: float = 0.99) -> str:
    ok = [s for s in rows if s.precision >= target]
    if not ok:
        return f"no k reaches precision {target}"
    best = max(ok, key=lambda s: s.recall)
    return f"best recall at precision >= {target}: {best.recall:.4f} (k={best.k}, precision {best.precision:.4f})"


def quality(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Prints the tables; returns the keys and window keys of the whole photos (for the speed test)."""
    paths = sorted(args.photos.glob("*/*.jpg"))
    if args.limit:
        paths = random.Random(args.seed).sample(paths, min(args.limit, len(paths)))
        paths.sort()
    start = time.perf_counter()
    jobs = [(i, p, args.copies, args.seed, args.compare, args.grey, args.same_face) for i, p in enumerate(paths)]
    with ProcessPoolExecutor(args.workers) as pool:
        families = list(pool.map(make_family, jobs, chunksize=32))
    images = len(families) * (args.copies + 1)
    print(
        f"quality: {len(families)} originals x {args.copies} copies = {images} images per representation, "
        f"hashed in {time.perf_counter() - start:.1f}s ({args.workers} workers, key + {WINDOWS} windows each)"
    )
    family = np.repeat(np.arange(len(families)), args.copies + 1)
    identity = np.repeat(np.array([f.identity for f in families]), args.copies + 1)
    mods = [m for f in families for m in f.mods]
    whole: tuple[np.ndarray, np.ndarray] | None = None
    for rep in ("whole", "crop"):
        rows = [h for f in families for h in f.keys[rep]]
        keys = dedup.as_hashes([r[0] for r in rows], dedup.HASH_WORDS)
        windows = dedup.as_hashes([w for r in rows for w in r[1 : 1 + WINDOWS]], dedup.HASH_WORDS)
        windows = windows.reshape(len(rows), WINDOWS, dedup.HASH_WORDS)
        whole = whole or (keys, windows)
        label = "whole 250x250 photos" if rep == "whole" else f"face crops (central {CROP_BOX}px -> {CROP_SIDE}px)"
        table = score(keys, windows, family, identity, mods, list(range(10, 31, 2)))
        print_table(f"[{label}] 192-bit key + {WINDOWS} window keys (facescale's rule), distance k:", table, args.k)
        print_verdict(table, args.k)
        if rep == "crop" and args.same_face:
            faces = [face for f in families for face in f.faces]
            records = [
                dedup.Record(
                    str(n), str(who), row[0], windows=tuple(row[1 : 1 + WINDOWS]), embedding=vector, face_key=aligned
                )
                for n, (who, row, (vector, aligned)) in enumerate(zip(identity, rows, faces, strict=True))
            ]
            rule = dedup.SameFace()
            extra = dedup.same_face_pairs(records, rule, keys, windows)
            table = score(keys, windows, family, identity, mods, list(range(10, 31, 2)), extra)
            missing = sum(vector is None for vector, _ in faces)
            print_table(
                f"[{label}] 192-bit key + {WINDOWS} window keys + same face (aligned faces' keys within "
                f"{rule.max_aligned_bits}, or embeddings within {rule.max_distance} and keys within {rule.max_bits}; "
                f"{missing} crops without a face), distance k:",
                table,
                args.k,
            )
            print_verdict(table, args.k)
        table = score(keys, None, family, identity, mods, list(range(16, 41, 4)))
        print_table(f"[{label}] 192-bit key alone, no windows, distance k:", table, None)
        print("  " + best_at_precision(table))
        singles = [("luma phash", keys[:, :1])]
        if args.compare:
            names = ("dhash", "whash", "average_hash")
            singles += [(n, dedup.as_hashes([r[1 + WINDOWS + c] for r in rows], 1)) for c, n in enumerate(names)]
        for name, single in singles:
            table = score(single, None, family, identity, mods, list(range(2, 17, 2)))
            print_table(f"[{label}] {name} alone (64 bits), distance k:", table, None)
            print("  " + best_at_precision(table))
    assert whole is not None
    return whole


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def speed_case(name: str, keys: np.ndarray, windows: np.ndarray, k: int, sample: int, budget_s: float) -> None:
    n, j = windows.shape[:2]
    bands = dedup.choose_bands(n, k, queries=n * j)
    t_mih, pairs = timed(lambda: dedup.near_duplicate_pairs(keys, k, windows=windows))
    m = min(n, sample)
    sub, sub_windows = keys[:m], windows[:m]
    t_sub_mih, sub_mih = timed(lambda: dedup.near_duplicate_pairs(sub, k, windows=sub_windows))
    t_sub_bf, sub_bf = timed(lambda: dedup.brute_force_pairs(sub, k, windows=sub_windows))
    assert np.array_equal(sub_mih, sub_bf), "multi-index search and brute force disagree"
    estimate = t_sub_bf * (n / m) ** 2
    if m == n or estimate <= budget_s:
        t_bf, full_bf = timed(lambda: dedup.brute_force_pairs(keys, k, windows=windows))
        assert np.array_equal(full_bf, pairs), "multi-index search and brute force disagree"
        bf_text = f"brute force {t_bf:.2f}s (measured)"
    else:
        t_bf = estimate
        bf_text = f"brute force ~{t_bf:.0f}s (extrapolated quadratically from {m} keys: {t_sub_bf:.2f}s)"
    print(
        f"  {name}: {len(pairs)} pairs; multi-index ({bands} bands) {t_mih:.2f}s, {bf_text}: "
        f"speed-up x{t_bf / t_mih:.0f}   [at {m} keys: multi-index {t_sub_mih:.3f}s, brute force {t_sub_bf:.2f}s, "
        "same pairs]"
    )


def speed(args: argparse.Namespace, real: tuple[np.ndarray, np.ndarray] | None) -> None:
    rng = np.random.default_rng(args.seed)
    n, k, words = args.n, args.k, dedup.HASH_WORDS
    print(
        f"\nspeed: {n} 192-bit keys with {WINDOWS} window keys each (a window key vs every other key, keys vs "
        f"keys), k={k}; brute force extrapolated when over {args.brute_budget:.0f}s"
    )
    cases = []
    if real is not None:
        # the real keys (whole photos and their copies) tiled to n; every tile but the first gets k+1..k+16
        # random bit flips, the same ones in a key and its windows, so it keeps the real bit statistics
        # without becoming a near-duplicate of its source
        keys, windows = real
        tiles = -(-n // len(keys))
        stacked = np.concatenate([keys[:, None], windows], axis=1)
        stacked = np.tile(stacked, (tiles, 1, 1))[:n].copy()
        flips = rng.integers(k + 1, k + 17, n)
        flips[: len(keys)] = 0
        _flip_bits(stacked, flips, rng)
        stacked = stacked[rng.permutation(n)]
        cases.append(("real keys, tiled with bit flips", stacked[:, 0].copy(), stacked[:, 1:].copy()))
    keys = rng.integers(0, 2**64, size=(n, words), dtype=np.uint64, endpoint=False)
    planted = n // 20  # 5% near-duplicates of other keys, at distance 0..k
    keys[-planted:] = keys[rng.integers(0, n - planted, planted)]
    flips = np.zeros(n, dtype=np.int64)
    flips[-planted:] = rng.integers(0, k + 1, planted)
    _flip_bits(keys[:, None], flips, rng)
    # each window key is its key with 8..40 random bits flipped (real windows lie 5..40 bits from their key)
    windows = np.repeat(keys[:, None], WINDOWS, axis=1)
    for w in range(WINDOWS):
        _flip_bits(windows[:, w : w + 1], rng.integers(8, 41, n), rng)
    order = rng.permutation(n)
    cases.append(("uniform random + 5% planted near-duplicates", keys[order], windows[order]))
    for name, case_keys, case_windows in cases:
        speed_case(name, case_keys, case_windows, k, args.sample, args.brute_budget)


def _flip_bits(stacked: np.ndarray, flips: np.ndarray, rng: np.random.Generator) -> None:
    """Flip the same ``flips[i]`` distinct random bits in every key of ``stacked[i]`` (shape (n, keys, words))."""
    bits = stacked.shape[2] * 64
    for row in np.flatnonzero(flips):
        for b in rng.choice(bits, int(flips[row]), replace=False):
            stacked[row, :, b // 64] ^= np.uint64(1) << np.uint64(63 - b % 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "lfw-dev")
    parser.add_argument("--limit", type=int, default=0, help="originals to use (0: all)")
    parser.add_argument("--copies", type=int, default=2, help="modified copies per original")
    parser.add_argument("--k", type=int, default=dedup.DEFAULT_MAX_DISTANCE, help="distance to report and time")
    parser.add_argument("--compare", action="store_true", help="also score imagehash's dhash, whash, average_hash")
    parser.add_argument("--grey", action="store_true", help="turn every photo grey first")
    parser.add_argument("--same-face", action="store_true", help="embed the face crops and add the same-face rule")
    parser.add_argument("--n", type=int, default=100_000, help="keys for the speed test")
    parser.add_argument("--sample", type=int, default=10_000, help="keys the brute force always runs on")
    parser.add_argument("--brute-budget", type=float, default=60.0, help="seconds above which it is extrapolated")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    real = None if args.skip_quality else quality(args)
    if not args.skip_speed:
        speed(args, real)
    print(f"\ntotal {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
