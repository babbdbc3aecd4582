"""The store lease: curation and erasure never run on one root at the same time.

Curation reads every crop and writes a version from them; an erasure rewrites those crops and
versions. Each holds the root's lease while it runs, and a second one is refused with one line
naming the holder, before it changes anything.

- Local disk: an OS file lock on ``<root>/_lease.lock`` (released by the kernel when its holder
  dies, so a killed run never leaves the store held), plus ``_lease.json`` saying who holds it.
- Object stores have no locks: ``_lease.json`` itself is the lease, valid until its
  ``expires_at`` (`LEASE_TTL`), removed by its holder at the end. A holder killed on an object
  store leaves it until it expires; ``facescale`` names it and when it does.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta

import filelock
from pydantic import BaseModel, ConfigDict, ValidationError

from facescale.errors import ConflictError, StorageError

from .fs import Location
from .manifest import utcnow

LEASE_FILE = "_lease.json"
LOCK_FILE = "_lease.lock"
#: How long a lease on an object store holds without its holder (a night's curation fits in it).
LEASE_TTL = timedelta(hours=12)


class Lease(BaseModel):
    """Who holds the store, since when, until when (object stores)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    holder: str  # what runs: curation, erasure
    host: str
    pid: int
    since: datetime
    expires_at: datetime

    def describe(self) -> str:
        return f"{self.holder} (pid {self.pid} on {self.host}, since {self.since:%Y-%m-%d %H:%M} UTC)"


def current_lease(location: Location) -> Lease | None:
    """The lease recorded on the store, if any (a malformed one reads as none)."""
    path = location.path(LEASE_FILE)
    if not location.exists(path):
        return None
    try:
        return Lease.model_validate_json(location.read_bytes(path))
    except (ValidationError, StorageError):
        return None


@contextlib.contextmanager
def store_lease(location: Location, holder: str) -> Iterator[Lease]:
    """Hold the root's lease for ``holder`` while the block runs; `ConflictError` if another holds it."""
    now = utcnow()
    lease = Lease(holder=holder, host=socket.gethostname(), pid=os.getpid(), since=now, expires_at=now + LEASE_TTL)
    if location.is_local:
        location.makedirs(location.root)
        lock = filelock.FileLock(location.path(LOCK_FILE), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            held = current_lease(location)
            raise ConflictError(
                f"the store {location.display(location.root)} is held by {held.describe() if held else 'another run'}: "
                f"{holder} waits until it ends"
            ) from None
        try:
            location.write_bytes_atomic(location.path(LEASE_FILE), lease.model_dump_json().encode())
            yield lease
        finally:
            location.remove_file(location.path(LEASE_FILE))
            lock.release()
        return
    held = current_lease(location)
    if held is not None and held.expires_at > now:
        raise ConflictError(
            f"the store {location.display(location.root)} is held by {held.describe()} until "
            f"{held.expires_at:%Y-%m-%d %H:%M} UTC: {holder} waits until it ends"
        )
    location.write_bytes_atomic(location.path(LEASE_FILE), lease.model_dump_json().encode())
    try:
        yield lease
    finally:
        if current_lease(location) == lease:
            location.remove_file(location.path(LEASE_FILE))

