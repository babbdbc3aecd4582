"""An erasure run as a child process by the kill tests; it can SIGKILL itself after its N-th file write.

    python _erasure_proc.py ROOT identity "Ada Lovelace" [--kill-after N]
    python _erasure_proc.py ROOT photos ID|URL... [--kill-after N]

``--kill-after N`` patches this process's own atomic file writing so that it kills itself
with SIGKILL right after the N-th file was put in place (a shard, a record, a gallery): every
point between two writes of an erasure is reachable. It prints ``writes N`` when it finished
without being killed (the number of files the erasure wrote).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from collections.abc import Iterator
from typing import IO

from facescale.storage import StorageRoot
from facescale.storage.erasure import erase, identity_target, photos_target
from facescale.storage.fs import Location


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("kind", choices=["identity", "photos"])
    parser.add_argument("refs", nargs="+")
    parser.add_argument("--kill-after", type=int, default=0)
    args = parser.parse_args()
    writes = 0
    original = Location.open_atomic

    @contextlib.contextmanager
    def counted(self: Location, path: str) -> Iterator[IO[bytes]]:
        nonlocal writes
        with original(self, path) as fh:
            yield fh
        writes += 1
        if writes == args.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    Location.open_atomic = counted  # type: ignore[method-assign]  # the kill point
    root = StorageRoot.from_uri(args.root)
    if args.kind == "identity":
        target, identity = identity_target(root, args.refs[0])
        erase(root, target, requested_by="kill test", reason="takedown", identity=identity)
    else:
        erase(root, photos_target(args.refs), requested_by="kill test", reason="takedown")
    print(f"writes {writes}", flush=True)


if __name__ == "__main__":
    main()
