"""Peak memory of `facescale datasets export` at the seed's size (650 x 365 = 237,250 samples) vs 10x smaller.

The requirement: an export streams (one shard, one record batch at a time), so its peak RSS does
not grow with the version: the ratio large / small stays near 1.0 for every format.

Two versions are written once with the storage API into ``bench/.cache/export-memory/store``
(``--keep`` keeps them between runs): ``small`` with 65 identities and ``large`` with 650, each
identity 365 samples: 350 train, 10 val, 5 test (the default recipe: 50 photos split 35/10/5 by
source photo, each train photo x 10 with its augmented copies), every sample a real
128 px face crop (centre crops of lfw-dev photos, JPEG quality 95, cycled: the bytes a real
version holds), then published by the real Great Expectations gate (repeated originals allowed:
the crops are cycled). Each (format, size) then runs `export_version` in a fresh subprocess into a fresh
destination, which reads its own peak RSS (``VmHWM`` of /proc/self/status, exact) when done; the
destination is deleted afterwards. Prints per run: samples, files, wall seconds, samples/s,
peak RSS; then per format the ratio large / small of the peak and of the time. Run:

    .venv/bin/python bench/bench_export_memory.py [--formats parquet webdataset imagefolder]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache" / "export-memory"
PHOTOS = REPO.parent / "shared" / "data" / "lfw-dev"
SPLIT = {"train": 350, "val": 10, "test": 5}  # per identity: 35 train photos x 10, 10 val, 5 test

CHILD = """
import json, sys, time
from facescale.storage import DatasetStore, Location
from facescale.storage.export import export_version

store = DatasetStore(Location.from_uri(sys.argv[1]))
start = time.perf_counter()
summary = export_version(store, sys.argv[2], Location.from_uri(sys.argv[3]), sys.argv[4])
seconds = time.perf_counter() - start
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"samples": summary.samples, "files": summary.files, "seconds": seconds, "peak_kib": peak}))
"""


def crops(n: int) -> list[bytes]:
    """``n`` real 128 px face crops: the centre of lfw-dev photos, JPEG quality 95."""
    from PIL import Image

    found = []
    for path in sorted(PHOTOS.glob("*/*.jpg"))[:n]:
        with Image.open(path) as image:
            face = image.convert("RGB").crop((61, 61, 189, 189))
        buffer = io.BytesIO()
        face.save(buffer, format="JPEG", quality=95)
        found.append(buffer.getvalue())
    return found


def write_version(store_root: Path, version: str, identities: int, pool: list[bytes]) -> int:
    from facescale.storage import DatasetStore, IdentityEntry, Location

    store = DatasetStore(Location.from_uri(str(store_root)))
    if store.exists(version) and store.get(version).published:
        return store.get(version).rows
    if store.exists(version):
        store.location.remove_tree(store.version_dir(version))
    entries, batch, n = [], [], 0
    with store.create(version, parent=None, config={"crop_size": 128}) as writer:
        for label in range(identities):
            slug = f"person-{label:05d}"
            entries.append(IdentityEntry(name=f"Person {label:05d}", slug=slug, label=label, counts=dict(SPLIT)))
            for split, count in SPLIT.items():
                for k in range(count):
                    image = pool[n % len(pool)]
                    source = hashlib.sha256(f"{slug}/{split}/{k // 10}".encode()).hexdigest()
                    batch.append({
                        "sample_id": f"{source[:16]}-{k}", "source_image_id": source,
                        "identity": f"Person {label:05d}", "identity_slug": slug, "label": label, "split": split,
                        "aug_index": k % 10 if split == "train" else 0,
                        "face_box": {"x": 61, "y": 61, "w": 128, "h": 128}, "image": image, "width": 128,
                        "height": 128, "sharpness": 50.0, "brightness": 120.0, "contrast": 40.0,
                    })
                    n += 1
                    if len(batch) == 4096:
                        writer.write(batch)
                        batch = []
        if batch:
            writer.write(batch)
        writer.commit(entries)
    # Only published versions are exported: the real gate publishes it (the crops are cycled from a
    # pool, so repeated originals are allowed here)
    from facescale.pipeline.validate import validate_version

    summary = validate_version(store, version, max_duplicate_rate=1.0)
    if not summary.success:
        raise SystemExit(f"version {version} failed its gate: {summary.failures}")
    return n


def run(store_root: Path, version: str, fmt: str) -> dict[str, float]:
    dest = CACHE / f"export-{version}-{fmt}"
    shutil.rmtree(dest, ignore_errors=True)
    try:
        child = subprocess.run([sys.executable, "-c", CHILD, str(store_root), version, str(dest), fmt],
                               capture_output=True, text=True)
        if child.returncode:
            raise SystemExit(f"export of {version} as {fmt} failed:\n{child.stderr}")
        out = child.stdout
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", nargs="+", default=["parquet", "webdataset", "imagefolder"])
    parser.add_argument("--identities", type=int, nargs=2, default=[65, 650], help="small and large")
    parser.add_argument("--pool", type=int, default=500, help="distinct real crops, cycled")
    parser.add_argument("--keep", action="store_true", help="keep the versions for the next run")
    args = parser.parse_args()
    store_root = CACHE / "store"
    pool = crops(args.pool)
    sizes = {}
    for name, identities in zip(("small", "large"), args.identities, strict=True):
        start = time.perf_counter()
        sizes[name] = write_version(store_root, name, identities, pool)
        print(f"version {name}: {identities} identities, {sizes[name]:,} samples ({time.perf_counter() - start:.0f} s)")
    results: dict[tuple[str, str], dict[str, float]] = {}
    print(f"{'format':12} {'version':8} {'samples':>9} {'files':>8} {'seconds':>8} {'samples/s':>10} {'peak RSS':>10}")
    for fmt in args.formats:
        for name in ("small", "large"):
            r = results[fmt, name] = run(store_root, name, fmt)
            print(f"{fmt:12} {name:8} {r['samples']:>9,} {r['files']:>8,} {r['seconds']:>8.1f} "
                  f"{r['samples'] / r['seconds']:>10,.0f} {r['peak_kib'] / 1024:>8.0f} MiB")
    print(f"\nlarge / small ({sizes['large'] / sizes['small']:.0f}x the samples):")
    for fmt in args.formats:
        small, large = results[fmt, "small"], results[fmt, "large"]
        print(f"  {fmt:12} peak RSS {large['peak_kib'] / small['peak_kib']:.2f}x, "
              f"time {large['seconds'] / small['seconds']:.1f}x")
    if not args.keep:
        shutil.rmtree(store_root, ignore_errors=True)


if __name__ == "__main__":
    main()
