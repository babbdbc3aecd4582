"""The store lease (`storage.lease`): curation and erasure never run on one root together; on an object store
a dead holder's lease runs out (at once when it died on this host) and a live holder keeps renewing it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest

from facescale.errors import ConflictError
from facescale.storage import Location
from facescale.storage import lease as lease_module
from facescale.storage.lease import LEASE_FILE, Lease, current_lease, store_lease
from facescale.storage.manifest import utcnow


def _plant(location: Location, **fields: object) -> None:
    now = utcnow()
    held = Lease(holder="curation", host="other-host", pid=1, since=now, expires_at=now + timedelta(minutes=5))
    location.write_bytes_atomic(location.path(LEASE_FILE), held.model_copy(update=fields).model_dump_json().encode())


def test_a_local_store_is_held_by_one_run_at_a_time(local_location: Location) -> None:
    with store_lease(local_location, "curation"):
        assert current_lease(local_location).holder == "curation"
        with pytest.raises(ConflictError, match=r"held by curation \(pid \d+ on .*\): erasure waits"), \
                store_lease(local_location, "erasure"):
            pass
    assert current_lease(local_location) is None
    with store_lease(local_location, "erasure"):  # free again
        pass


def test_an_object_store_lease_refuses_a_live_holder_and_takes_over_a_dead_one(memory_location: Location) -> None:
    _plant(memory_location)  # another host, not expired
    with pytest.raises(ConflictError, match=r"held by curation .* on other-host"), \
            store_lease(memory_location, "erasure"):
        pass
    _plant(memory_location, expires_at=utcnow() - timedelta(seconds=1))  # expired: its holder stopped renewing
    with store_lease(memory_location, "erasure") as mine:
        assert current_lease(memory_location) == mine
    assert current_lease(memory_location) is None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _plant(memory_location, host=socket.gethostname(), pid=int(dead.stdout))  # died on this host: stale at once
    with store_lease(memory_location, "erasure"):
        pass


def test_a_live_holder_renews_its_lease(memory_location: Location, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lease_module, "LEASE_TTL", timedelta(seconds=0.3))
    with store_lease(memory_location, "curation") as mine:
        time.sleep(0.5)
        renewed = current_lease(memory_location)
        assert renewed is not None and renewed.expires_at > mine.expires_at
    assert current_lease(memory_location) is None
