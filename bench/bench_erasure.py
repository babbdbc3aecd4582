"""How long erasing one person takes on a seed-scale store, against reading that store once.

An erasure must at least read the columns that find the person in every RAW, crop and version
shard, then rewrite the shards holding them (`storage.erasure`). This bench erases one person
(``--name``, default: the registered identity with the most stored photos) from a hard-linked
copy of ``--root`` (the original is never changed: every rewrite replaces a file, never edits
one in place), timing each step, then `verify`; the baseline, run first in the same process, is
one plain read of every shard of the store (all columns: the bytes an erasure could have to
touch). Printed: seconds per step, the total, verify, the baseline and the ratio erasure /
baseline, with what was removed.

    .venv/bin/python bench/bench_erasure.py --root var/seed600 [--name "George W Bush"]

``var/seed600`` is the store `scripts/seed-train.sh` makes (the card's headline run: every lfw-dev
person with 2-9 photos ingested, about 600 identities, curated into version ``seed600``, and the
model trained on it); its ingest and curate steps alone are enough for this bench.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from facescale.storage import StorageRoot
from facescale.storage.erasure import erase, identity_target, verify
from facescale.storage.shards import iter_batches


def read_everything(root: StorageRoot) -> tuple[float, int]:
    """Seconds to read every RAW, crop and version shard once, and the rows read."""
    started = time.perf_counter()
    rows = 0
    raw, crops, datasets = root.raw, root.crops, root.datasets
    paths = [(raw.location, p) for p in raw.shard_paths()]
    paths += [(crops.location, p) for p in crops.shard_paths(crops.records())]
    paths += [(datasets.location, p) for m in datasets.list() for p in datasets.shard_paths(m)]
    for location, path in paths:
        for batch in iter_batches(location, [path], batch_size=4096):
            rows += batch.num_rows
    return time.perf_counter() - started, rows


def busiest(root: StorageRoot) -> str:
    counts: Counter[str] = Counter()
    for batch in root.raw.iter_batches(columns=["identity", "error"], batch_size=8192):
        rows = batch.to_pydict()
        counts.update(n for n, e in zip(rows["identity"], rows["error"], strict=True) if e is None)
    return counts.most_common(1)[0][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("var/seed600"))
    parser.add_argument("--name", help="the person to erase (default: the one with the most stored photos)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    if not (args.root / "registry").is_dir():
        raise SystemExit(f"{args.root} holds no store: run scripts/seed-train.sh {args.root} first")
    with tempfile.TemporaryDirectory(dir=args.root.parent) as tmp:
        copy = Path(tmp) / "store"
        shutil.copytree(args.root, copy, copy_function=os.link)  # hard links: rewrites replace files
        root = StorageRoot.from_uri(str(copy))
        name = args.name or busiest(root)
        baseline, rows = read_everything(root)
        steps: dict[str, float] = {}
        clock = [time.perf_counter(), ""]

        def on_step(step: str) -> None:
            now = time.perf_counter()
            if clock[1]:
                steps[str(clock[1])] = now - float(clock[0])
            clock[0], clock[1] = now, step

        started = time.perf_counter()
        target, identity = identity_target(root, name)
        on_step("plan")
        record = erase(root, target, requested_by="bench", reason="bench", identity=identity, on_step=on_step)
        on_step("")
        total = time.perf_counter() - started
        started = time.perf_counter()
        left = verify(root, record, [name])
        verified = time.perf_counter() - started
    figures = {
        "person": name, "photos": len(record.found.image_ids), "removed": record.removed,
        "store_rows": rows, "steps_s": steps, "erasure_s": total, "verify_s": verified,
        "read_everything_s": baseline, "ratio_erasure_to_read": total / baseline, "left": sum(left.values()),
    }
    print(f"store: {args.root} ({rows} rows in RAW, crop and version shards)")
    print(f"erased {name!r}: {len(record.found.image_ids)} photos; removed {record.removed}")
    print("steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items()))
    if sum(left.values()):
        print("LEFT: " + ", ".join(f"{k} {v}" for k, v in left.items() if v))
    print(f"erasure {total:.2f} s, verify {verified:.2f} s (left: {sum(left.values())}); "
          f"reading every shard once {baseline:.2f} s; erasure / read = {total / baseline:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
