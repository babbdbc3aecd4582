"""Shard I/O vs one-file-per-image (the seed's folder layout), measured in one process.

Writes the lfw-dev photos (a) as one JPEG file per image in per-identity folders and
(b) as RAW Parquet shards through facescale.storage, then reads every image back both ways,
repeating each phase and keeping the best time. Prints images/s and the ratio
shards / files. Run:  .venv/bin/python bench/bench_shards.py [--repeat 3] [--photos DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from facescale.storage import Location, RawStore

REPO = Path(__file__).resolve().parents[1]


def load_photos(root: Path) -> list[tuple[str, str, bytes]]:
    folders = [d for d in sorted(root.iterdir()) if d.is_dir()]
    return [(d.name, p.name, p.read_bytes()) for d in folders for p in sorted(d.glob("*.jpg"))]


def best_of(repeat: int, fn: Callable[[], int]) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - start)
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "lfw-dev")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    photos = load_photos(args.photos)
    total_mb = sum(len(b) for *_, b in photos) / 1e6
    work = Path(tempfile.mkdtemp(prefix="facescale-bench-"))
    try:
        files_dir, store_dir = work / "files", work / "store"

        def write_files() -> int:
            shutil.rmtree(files_dir, ignore_errors=True)
            for person, name, data in photos:
                (files_dir / person).mkdir(parents=True, exist_ok=True)
                (files_dir / person / name).write_bytes(data)
            return len(photos)

        def write_shards() -> int:
            shutil.rmtree(store_dir, ignore_errors=True)
            store = RawStore(Location.from_uri(str(store_dir)))
            now = datetime.now(UTC)
            with store.open("bench") as writer:
                writer.write(
                    {
                        "image_id": hashlib.sha256(data).hexdigest(), "run_id": "bench", "identity": person,
                        "identity_slug": person.lower(), "keyword": person, "engine": "local",
                        "source_url": f"file:///{person}/{name}", "fetched_at": now, "image": data,
                    }
                    for person, name, data in photos
                )
                writer.commit(finished=True)
            return len(photos)

        def read_files() -> int:
            return sum(1 for p in files_dir.rglob("*.jpg") if p.read_bytes())

        def read_shards() -> int:
            store = RawStore(Location.from_uri(str(store_dir)))
            n = 0
            for batch in store.iter_batches(columns=["image"]):
                n += sum(1 for b in batch.column("image").to_pylist() if b)
            return n

        results = {}
        for label, fn in [("write files", write_files), ("write shards", write_shards),
                          ("read files", read_files), ("read shards", read_shards)]:
            seconds, n = best_of(args.repeat, fn)
            assert n == len(photos), (label, n)
            results[label] = len(photos) / seconds
            print(f"{label:13s} {results[label]:10.0f} images/s  ({total_mb / seconds:7.1f} MB/s)")
        print(f"{len(photos)} photos, {total_mb:.1f} MB, best of {args.repeat}")
        print(f"ratio write shards/files: {results['write shards'] / results['write files']:.2f}x")
        print(f"ratio read  shards/files: {results['read shards'] / results['read files']:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
