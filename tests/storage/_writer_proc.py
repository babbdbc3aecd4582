"""A storage writer run as a child process by the kill tests; it can SIGKILL itself on cue.

    python _writer_proc.py ROOT version --first 1000 --rows 400 [--kill POINT:N]
    python _writer_proc.py ROOT raw --units 12 --rows 7 [--kill POINT:N]

``version`` writes CURATED version ``v2`` (parent: the newest version) from
``curated_row(first + i)``; ``raw`` writes RAW run ``run-1`` one unit at a time, committing
after each unit and skipping units already completed (a resumable scraper in miniature),
then marks the run finished.

``--kill POINT:N`` patches this process's own file writing, before anything is written,
so that it kills itself with SIGKILL at a deterministic point of the N-th file of a kind
(``shard``: a Parquet shard; ``meta``: ``manifest.json`` or ``run.json``):

    shard-write / meta-write          half-way through writing the file (partial bytes flushed)
    shard-commit / meta-committed     right after the file was renamed into place
    shard-rename / meta-rename        right before that rename: the file is complete

It prints ``writing`` once its first rows are written (the parent may then kill it at a
random time) and ``done`` when the write finished.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import IO

from conftest import curated_row, identity_entries, raw_row  # this script's own folder

from facescale.errors import ConflictError
from facescale.storage import DatasetStore, Location, RawStore, ShardSizing

SHARD_KILL_AFTER_BYTES = 200  # a shard is killed once this much of it has been written


def _kind(path: str) -> str:
    name = os.path.basename(path)
    if name.endswith(".parquet"):
        return "shard"
    if name.endswith(("manifest.json", "run.json")):
        return "meta"
    return "other"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _KillingFile:
    """Passes writes through until ``limit`` bytes, then writes half a chunk and dies."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self._raw = raw
        self._limit = limit
        self._written = 0

    def write(self, data: bytes) -> int:
        if self._written + len(data) >= self._limit:
            self._raw.write(bytes(data[: max(1, len(data) // 2)]))
            self._raw.flush()
            _die()
        self._written += len(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()


def install_kill_point(spec: str) -> None:
    """Patch `Location.open_atomic` and `os.replace` to die at ``POINT:N``."""
    point, nth_text = spec.split(":")
    kind, _, moment = point.partition("-")
    nth = int(nth_text)
    opened: collections.Counter[str] = collections.Counter()
    renamed: collections.Counter[str] = collections.Counter()
    original_open_atomic = Location.open_atomic
    original_replace = os.replace

    @contextlib.contextmanager
    def open_atomic(self: Location, path: str) -> Iterator[IO[bytes]]:
        opened[_kind(path)] += 1
        target = moment == "write" and _kind(path) == kind and opened[kind] == nth
        with original_open_atomic(self, path) as fh:
            if target:
                limit = SHARD_KILL_AFTER_BYTES if kind == "shard" else 1
                yield _KillingFile(fh, limit)  # type: ignore[misc]
            else:
                yield fh

    def replace(src: str, dst: str, *args: object, **kwargs: object) -> None:
        renamed[_kind(dst)] += 1
        target = _kind(dst) == kind and renamed[kind] == nth
        if target and moment == "rename":
            _die()
        original_replace(src, dst, *args, **kwargs)
        if target and moment in ("commit", "committed"):
            _die()

    Location.open_atomic = open_atomic  # type: ignore[method-assign]
    os.replace = replace  # type: ignore[assignment]


def write_version(args: argparse.Namespace) -> None:
    store = DatasetStore(Location.from_uri(args.root), _sizing(args))
    rows = [curated_row(args.first + i) for i in range(args.rows)]
    with store.create("v2", config={"rows": args.rows}) as writer:
        for start in range(0, len(rows), 25):
            writer.write(rows[start : start + 25])
            if start == 0:
                print("writing", flush=True)
        writer.commit(identity_entries(rows))


def write_raw(args: argparse.Namespace) -> None:
    store = RawStore(Location.from_uri(args.root), _sizing(args))
    try:
        writer = store.open("run-1", meta={"units": args.units})
    except ConflictError:  # finished before this process started: nothing left to do
        print("writing", flush=True)
        return
    started = False
    for unit in range(args.units):
        name = f"unit-{unit:02d}"
        if writer.is_completed(name):
            continue
        first = unit * args.rows
        writer.write([raw_row(first + j, "run-1", rejected=(j % 5 == 4)) for j in range(args.rows)])
        writer.commit([name])
        if not started:
            print("writing", flush=True)
            started = True
    writer.commit(finished=True)
    if not started:
        print("writing", flush=True)


def _sizing(args: argparse.Namespace) -> ShardSizing:
    return ShardSizing(rows_per_row_group=args.rows_per_group, max_rows_per_shard=args.rows_per_shard)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root")
    parser.add_argument("mode", choices=["version", "raw"])
    parser.add_argument("--first", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--rows-per-group", type=int, default=3)
    parser.add_argument("--rows-per-shard", type=int, default=10)
    parser.add_argument("--kill", default=None)
    args = parser.parse_args(argv)
    if args.kill:
        install_kill_point(args.kill)
    (write_version if args.mode == "version" else write_raw)(args)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
