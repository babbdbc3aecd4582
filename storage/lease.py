"""The store lease: curation and erasure never run on one root at the same time.

Curation reads every crop and writes a version from them; an erasure rewrites those crops and
versions. Each holds the root's lease while it runs, and a second one is refused with one line
naming the holder, before it changes anything.

- Local disk: an OS file lock on ``<root>/_lease.lock`` (released by the kernel when its holder
  dies, so a killed run never leaves the store held), plus ``_lease.json`` saying who holds it.
- Object stores have no locks: ``_lease.json`` itself is the lease, valid until its
  ``expires_at``. Its holder renews it every `LEASE_TTL` / 3 from a background thread and
  removes it at the end, so a holder that was killed leaves it behind for at most `LEASE_TTL`
  (a retried task waits that long at most), and at once when the dead holder ran on the same
  host (its pid is gone). The refusal names the holder and when its lease runs out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import filelock
from pydantic import BaseModel, ConfigDict, ValidationError

from facescale.errors import ConflictError, StorageError

from .fs import Location
from .manifest import utcnow

log = logging.getLogger(__name__)

LEASE_FILE = "_lease.json"
LOCK_FILE = "_lease.lock"
#: How long a lease on an object store outlives its holder's last renewal.
LEASE_TTL = timedelta(minutes=10)


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
    if held is not None and held.expires_at > now and not _dead_here(held):
        raise ConflictError(
            f"the store {location.display(location.root)} is held by {held.describe()} until "
            f"{held.expires_at:%Y-%m-%d %H:%M:%S} UTC unless renewed: {holder} waits until it ends"
        )
    path = location.path(LEASE_FILE)
    location.write_bytes_atomic(path, lease.model_dump_json().encode())
    done = threading.Event()

    def renew() -> None:
        while not done.wait(LEASE_TTL.total_seconds() / 3):
            renewed = lease.model_copy(update={"expires_at": utcnow() + LEASE_TTL})
            try:
                location.write_bytes_atomic(path, renewed.model_dump_json().encode())
            except StorageError as exc:  # the next renewal tries again; the lease holds until it expires
                log.warning("could not renew the store lease: %s", exc)

    renewer = threading.Thread(target=renew, name="store-lease", daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        done.set()
        renewer.join()
        mine = current_lease(location)
        if mine is not None and (mine.host, mine.pid, mine.since) == (lease.host, lease.pid, lease.since):
            location.remove_file(path)


def _dead_here(lease: Lease) -> bool:
    """Whether the lease's holder ran on this host and is gone (its lease is stale at once)."""
    if lease.host != socket.gethostname() or lease.pid == os.getpid():
        return False
    try:
        os.kill(lease.pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's
        return False
    return False

