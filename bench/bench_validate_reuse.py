"""The Great Expectations gate of a grown version: decoding every image vs taking the parent's decoded sizes.

A night that adds a few identities makes a version that holds its parent's samples plus a
few thousand new ones. `validate_version` takes the decoded size of each image the parent
already validated from the parent's ``validation/decoded.parquet`` (`decoded_sizes`) and
decodes only the new ones; with ``reuse_parent=False`` it decodes all of them. The bench
validates the parent first (so its record exists), then the child both ways, alternating, and
prints the best time of each, the ratio and the rows; both runs must reach the same outcome.

Run on a store the seed-scale bench made (night 1's version is night 2's parent):
    .venv/bin/python bench/bench_validate_reuse.py --root var/seed [--version nightly-20261202] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from facescale.pipeline.validate import decoded_sizes, validate_version
from facescale.storage import DatasetStore, Location


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("var/seed"))
    parser.add_argument("--version", default=None, help="the child version (default: the newest)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    store = DatasetStore(Location.from_uri(str(args.root.resolve())))
    child = store.get(args.version) if args.version else store.latest(published_only=False)
    if child is None or child.parent is None:
        parser.error("no version with a parent in this store")
    if not decoded_sizes(store, child.parent):
        start = time.perf_counter()
        validate_version(store, child.parent)
        print(f"parent {child.parent} validated first (records its sizes): {time.perf_counter() - start:.1f} s")
    shared = len(decoded_sizes(store, child.parent))
    best = {True: float("inf"), False: float("inf")}
    outcome = {}
    for _ in range(args.rounds):
        for reuse in (False, True):
            start = time.perf_counter()
            summary = validate_version(store, child.version_id, publish=False, reuse_parent=reuse)
            best[reuse] = min(best[reuse], time.perf_counter() - start)
            outcome[reuse] = summary.success
    assert outcome[True] == outcome[False], outcome
    print(f"child {child.version_id}: {child.rows:,} rows, the parent's record holds {shared:,} images")
    print(f"decode every image: {best[False]:.1f} s; parent's sizes: {best[True]:.1f} s; "
          f"ratio {best[False] / best[True]:.2f}x (success: {outcome[True]})")


if __name__ == "__main__":
    main()
