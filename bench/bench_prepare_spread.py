"""Curation's crop step (`prepare`) on a small run: RAW blocks split for the actors vs read as they are, in one run.

A read gives Ray Data one block per Parquet file (up to 128 MiB), and an actor of the crop
stage takes whole blocks; a small nightly run's RAW shards are one or two files, so one
`CropPreparer` actor used to crop almost everything while the other CPUs idled. `prepare`
now splits the read into blocks of `PREPARE_BLOCK_ROWS` rows (`Dataset.repartition(
target_num_rows_per_block=...)`, streaming, no shuffle). The bench ingests the lfw-dev people
with the most photos (real `ingest`, one RAW run) and fills two fresh crop caches from the
same RAW run with the real `prepare` on a local Ray of ``--cpus`` CPUs: once with the blocks
as read (the block size set above the run's size), once as shipped. It prints both wall
times (Ray start-up excluded: one session serves both) and the ratio; the crop caches must
hold the same rows.

Run:  .venv/bin/python bench/bench_prepare_spread.py [--photos 600] [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import ray

from facescale.config import CurationSettings
from facescale.pipeline import curate as curation
from facescale.scraper.ingest import ingest
from facescale.storage import CropStore, IdentityRegistry, Location, RawStore, read_table

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-dev"


def _people(root: Path, photos: int) -> Path:
    """A folder of the lfw-dev people with the most photos, about ``photos`` in all (symlinks)."""
    folders = sorted((p for p in SHARED.iterdir() if p.is_dir()), key=lambda p: -len(list(p.glob("*.jpg"))))
    out, total = root / "photos", 0
    for folder in folders:
        if total >= photos:
            break
        (out / folder.name).mkdir(parents=True)
        for src in sorted(folder.glob("*.jpg"))[: photos - total]:
            (out / folder.name / src.name).symlink_to(src)
            total += 1
    return out


def _fill(base: Path, name: str, settings: CurationSettings, block_rows: int, ray_session: object) -> tuple[float, int]:
    root = base / name
    shutil.copytree(base / "raw-store", root)
    location = Location.from_uri(str(root))
    curation.PREPARE_BLOCK_ROWS = block_rows
    started = time.perf_counter()
    curation.prepare(
        RawStore(location), CropStore(location), settings, curation.crop_params(settings), curation.Progress(),
        ray_session,  # type: ignore[arg-type]
    )
    wall = time.perf_counter() - started
    crops = CropStore(location)
    chunks = crops.chunks(curation.prepare_fingerprint(curation.crop_params(settings)))
    rows = read_table(location, crops.shard_paths(chunks), columns=["image_id"]).num_rows
    return wall, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    settings = CurationSettings()
    shipped = curation.PREPARE_BLOCK_ROWS
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        location = Location.from_uri(str(base / "raw-store"))
        summary = ingest(_people(base, args.photos), RawStore(location), IdentityRegistry(location), "bench")
        print(f"ingested {summary.accepted} photos as one RAW run")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        session = curation.RaySession(None)
        try:
            whole, rows_whole = _fill(base, "as-read", settings, 1 << 30, session)
            print(f"blocks as read:              {whole:7.1f} s  ({rows_whole} crop-cache rows)")
            split, rows_split = _fill(base, "split", settings, shipped, session)
            print(f"blocks of {shipped} rows (shipped): {split:7.1f} s  ({rows_split} crop-cache rows)")
        finally:
            ray.shutdown()
    assert rows_whole == rows_split, "the two crop caches differ"
    print(f"speed-up: {whole / split:.2f}x with {args.cpus} CPUs")


if __name__ == "__main__":
    main()
