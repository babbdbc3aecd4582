"""Wrong-person cleaning on lfw-dev: precision and recall with injected wrong-person photos.

For every lfw-dev identity with at least ``--min-photos`` photos (at most
``--max-per-identity`` of them, a seeded sample), wrong-person photos are injected so that
they make up ``rate`` of the contaminated identity (k = round(n * rate / (1 - rate)), at
least 1). Two scenarios:

- ``scattered``: each injected photo from a different other person of lfw-dev (seeded);
  the smaller rate's photos are a prefix of the larger rate's;
- ``impostor``: all injected photos of ONE other person (a co-star / namesake, the case a
  mean-based centre gets wrong), drawn from another benchmark identity.

Crops: the real cropper (pipeline/faces.py) is written in parallel, so crops are made
the simple way: the central 150x150 of the 250x250 deep-funneled photo, resized to 128x128
and JPEG-encoded (q=95); ``FaceEmbedder(crop_margin)`` embeds them through its Ray batch
path. Embeddings are cached in bench/.cache/ (gitignored), so reruns take seconds.

Then for each threshold, ``find_outliers`` (core = largest average-linkage group) is
compared with a naive baseline measured in the same run (remove a crop when its median
distance to ALL the identity's other crops exceeds the threshold). Printed per scenario,
rate and threshold: precision (removed that were injected / removed), recall (injected
that were removed), true photos lost, and identities judged ambiguous (all their photos
held back: counted as not removed, and not as lost).

``--sweep-margins`` instead measures which face box works best inside a crop (same /
different person separation over all pairs of a sample).

Run:  .venv/bin/python bench/bench_cleaning.py [--identities N] [--max-per-identity 15]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facescale.pipeline.cleaning import find_outliers
from facescale.pipeline.embeddings import DEFAULT_CROP_MARGIN, FaceEmbedder, embedding_distances

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache"
CROP_SPEC = "centre150-128-q95"

log = logging.getLogger("bench_cleaning")


def centre_crop_jpeg(path: Path, box: int = 150, size: int = 128) -> bytes:
    """The stand-in for the real cropper: central ``box`` square, resized to ``size``, JPEG q95."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        w, h = rgb.size
        left, top = (w - box) // 2, (h - box) // 2
        crop = rgb.crop((left, top, left + box, top + box)).resize((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


class EmbeddingCache:
    """Embeddings of crops keyed by the photo's path relative to the photo folder, on disk."""

    def __init__(self, photos: Path, margin: float, enabled: bool = True) -> None:
        self.photos = photos
        self.file = CACHE / f"embeddings-{CROP_SPEC}-m{margin:g}.npz"
        self.margin = margin
        self.enabled = enabled
        self.vectors: dict[str, np.ndarray] = {}
        self.computed = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        if enabled and self.file.exists():
            with np.load(self.file) as data:
                self.vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
        self._embedder: FaceEmbedder | None = None

    def get(self, paths: Sequence[Path], batch_size: int = 64) -> dict[str, np.ndarray]:
        """Embeddings (NaN rows = none) for ``paths``, computing and caching what is missing."""
        keys = [str(p.relative_to(self.photos)) for p in paths]
        missing = sorted({k for k in keys if k not in self.vectors})
        if missing:
            log.info("embedding %d crops (%d cached)", len(missing), len(set(keys)) - len(missing))
            if self._embedder is None:
                self._embedder = FaceEmbedder(self.margin)
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                images = np.array([centre_crop_jpeg(self.photos / k) for k in chunk], dtype=object)
                t0, c0 = time.perf_counter(), time.process_time()
                out = self._embedder({"image": images})["embedding"]
                self.seconds += time.perf_counter() - t0
                self.cpu_seconds += time.process_time() - c0
                self.computed += len(chunk)
                self.vectors.update(zip(chunk, out, strict=True))
                self._save()
                log.info("  %d / %d (%.3f s per crop)", start + len(chunk), len(missing), self.seconds / self.computed)
        return {k: self.vectors[k] for k in keys}

    def _save(self) -> None:
        if not self.enabled:
            return
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp.npz")
        keys = sorted(self.vectors)
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))
        os.replace(tmp, self.file)


@dataclass
class Case:
    """One contaminated identity: true photos then injected ones."""

    identity: str
    true: list[Path]
    injected: list[Path]


@dataclass
class Tally:
    identities: int = 0
    true: int = 0
    injected: int = 0
    removed: int = 0
    removed_injected: int = 0
    true_lost: int = 0
    ambiguous: int = 0
    held_back: int = 0

    def row(self) -> str:
        precision = f"{self.removed_injected / self.removed:.3f}" if self.removed else "    -"
        recall = f"{self.removed_injected / self.injected:.3f}" if self.injected else "    -"
        lost = f"{self.true_lost:4d} ({100 * self.true_lost / max(self.true, 1):4.1f}%)"
        return (
            f"{precision:>9} {recall:>7} {self.removed:>8} {self.injected:>9} {lost:>13} "
            f"{self.ambiguous:>5} ({self.held_back} photos)"
        )


def injection_count(n_true: int, rate: float) -> int:
    return max(1, round(n_true * rate / (1.0 - rate)))


def seeded(seed: int, *parts: str) -> random.Random:
    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def build_cases(
    people: dict[str, list[Path]], bench: list[str], rates: Sequence[float], max_per: int, seed: int
) -> dict[tuple[str, float], list[Case]]:
    """Contaminated identities per (scenario, rate)."""
    names = sorted(people)
    top_rate = max(rates)
    true_sets: dict[str, list[Path]] = {}
    for name in bench:
        rng = seeded(seed, "sample", name)
        photos = sorted(people[name])
        true_sets[name] = sorted(rng.sample(photos, min(max_per, len(photos))))
    cases: dict[tuple[str, float], list[Case]] = {}
    for name in bench:
        true = true_sets[name]
        k_max = injection_count(len(true), top_rate)
        rng = seeded(seed, "scattered", name)
        others = [n for n in names if n != name]
        scattered = [rng.choice(sorted(people[o])) for o in rng.sample(others, k_max)]
        # the impostor's photos come from its own benchmark sample (their embeddings are needed anyway)
        rng = seeded(seed, "impostor", name)
        impostor = rng.choice([n for n in bench if n != name])
        impostor_photos = rng.sample(true_sets[impostor], min(k_max, len(true_sets[impostor])))
        for rate in rates:
            k = injection_count(len(true), rate)
            cases.setdefault(("scattered", rate), []).append(Case(name, true, scattered[:k]))
            cases.setdefault(("impostor", rate), []).append(Case(name, true, impostor_photos[:k]))
    return cases


def naive(embeddings: np.ndarray, threshold: float) -> list[bool]:
    """Baseline: removed when the median distance to all the identity's other crops exceeds the threshold."""
    dist = embedding_distances(embeddings, embeddings)
    n = len(embeddings)
    return [float(np.median(np.delete(dist[i], i))) > threshold for i in range(n)]


def evaluate(
    cases: list[Case], vectors: dict[str, np.ndarray], photos: Path, threshold: float, method: str
) -> tuple[Tally, float]:
    tally = Tally()
    seconds = 0.0
    for case in cases:
        paths = case.true + case.injected
        emb = np.stack([vectors[str(p.relative_to(photos))] for p in paths])
        is_injected = [False] * len(case.true) + [True] * len(case.injected)
        t0 = time.perf_counter()
        if method == "core":
            verdicts = find_outliers(emb, threshold)
            removed = [v.reason in ("wrong_person", "no_embedding") for v in verdicts]
            ambiguous = any(v.reason == "ambiguous" for v in verdicts)
        else:
            removed, ambiguous = naive(emb, threshold), False
        seconds += time.perf_counter() - t0
        tally.identities += 1
        tally.true += len(case.true)
        tally.injected += len(case.injected)
        if ambiguous:
            tally.ambiguous += 1
            tally.held_back += len(paths)
            continue
        tally.removed += sum(removed)
        tally.removed_injected += sum(r and inj for r, inj in zip(removed, is_injected, strict=True))
        tally.true_lost += sum(r and not inj for r, inj in zip(removed, is_injected, strict=True))
    return tally, seconds


def sweep_margins(people: dict[str, list[Path]], bench: list[str], margins: Sequence[float], photos: Path) -> None:
    """Same/different-person separation of crops embedded with each crop margin."""
    from scipy.stats import mannwhitneyu

    sample = [(name, p) for name in bench for p in sorted(people[name])[:6]]
    labels = np.array([name for name, _ in sample])
    same = (labels[:, None] == labels[None, :])[np.triu_indices(len(sample), 1)]
    print(
        f"\nface box inside a crop: {len(bench)} identities x 6 crops, "
        f"{same.sum()} same / {(~same).sum()} different pairs"
    )
    print(f"{'margin':>6} {'same mean':>9} {'same p95':>8} {'diff mean':>9} {'diff p5':>7} {'acc@0.6':>8} {'AUC':>7}")
    for margin in margins:
        vectors = EmbeddingCache(photos, margin).get([p for _, p in sample])
        emb = np.stack([vectors[str(p.relative_to(photos))] for _, p in sample])
        dist = embedding_distances(emb, emb)[np.triu_indices(len(sample), 1)]
        auc = mannwhitneyu(dist[~same], dist[same]).statistic / (same.sum() * (~same).sum())
        acc = float(np.mean((dist < 0.6) == same))
        print(
            f"{margin:>6g} {dist[same].mean():>9.3f} {np.percentile(dist[same], 95):>8.3f} {dist[~same].mean():>9.3f} "
            f"{np.percentile(dist[~same], 5):>7.3f} {acc:>8.4f} {auc:>7.4f}"
        )


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "lfw-dev")
    parser.add_argument("--min-photos", type=int, default=10, help="identities with at least this many photos")
    parser.add_argument("--max-per-identity", type=int, default=15, help="true photos sampled per identity")
    parser.add_argument("--identities", type=int, default=None, help="only the first N qualifying identities")
    parser.add_argument("--rates", type=floats, default=[0.1, 0.3], help="injected fraction of each identity")
    parser.add_argument("--thresholds", type=floats, default=[0.5, 0.55, 0.6])
    parser.add_argument("--margin", type=float, default=DEFAULT_CROP_MARGIN, help="FaceEmbedder crop_margin")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cache", action="store_true", help="recompute embeddings (and do not save them)")
    parser.add_argument("--sweep-margins", type=floats, default=None, help="e.g. 0,0.05,0.1,0.15,0.2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.perf_counter()

    people = {d.name: sorted(d.glob("*.jpg")) for d in sorted(args.photos.iterdir()) if d.is_dir()}
    bench = [n for n in sorted(people) if len(people[n]) >= args.min_photos][: args.identities]
    if args.sweep_margins:
        sweep_margins(people, bench, args.sweep_margins, args.photos)
        return

    cases = build_cases(people, bench, args.rates, args.max_per_identity, args.seed)
    needed = sorted({p for group in cases.values() for c in group for p in c.true + c.injected})
    cache = EmbeddingCache(args.photos, args.margin, enabled=not args.no_cache)
    vectors = cache.get(needed)
    missing = sum(1 for v in vectors.values() if not np.all(np.isfinite(v)))

    n_true = sum(len(c.true) for c in cases[("scattered", args.rates[0])])
    print(
        f"\nlfw-dev wrong-person cleaning: {len(bench)} identities with >= {args.min_photos} photos "
        f"(<= {args.max_per_identity} true photos each, {n_true} in all), seed {args.seed}, "
        f"crops {CROP_SPEC}, crop_margin {args.margin:g}"
    )
    print(
        f"embeddings: {len(needed)} crops, {cache.computed} computed this run"
        + (
            f" ({cache.seconds / cache.computed:.3f} s wall, {cache.cpu_seconds / cache.computed:.3f} s CPU per crop)"
            if cache.computed
            else " (all cached)"
        )
        + f", {missing} without an embedding"
    )
    header = (
        f"{'scenario':<10} {'rate':>4} {'thr':>5} {'method':<6} {'precision':>9} {'recall':>7} {'removed':>8} "
        f"{'injected':>9} {'true lost':>13} {'ambiguous identities':>5}"
    )
    print(header)
    print("-" * len(header))
    timing: dict[str, float] = {"core": 0.0, "naive": 0.0}
    for (scenario, rate), group in sorted(cases.items(), key=lambda kv: (kv[0][0] != "scattered", kv[0])):
        for threshold in args.thresholds:
            for method in ("core", "naive"):
                tally, seconds = evaluate(group, vectors, args.photos, threshold, method)
                timing[method] += seconds
                print(f"{scenario:<10} {rate:>4g} {threshold:>5g} {method:<6} {tally.row()}")
        print()
    print(
        "core = find_outliers (largest average-linkage group, median distance to it); naive = median distance to "
        "all other crops (baseline, same run)."
    )
    total = time.perf_counter() - started
    print(f"judging time: core {timing['core']:.2f} s, naive {timing['naive']:.2f} s; total run {total:.0f} s")


if __name__ == "__main__":
    main()
