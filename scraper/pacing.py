"""Politeness: page loads spaced in time, per pool and per engine, across every thread of the process.

`RateLimiter` spaces events at least ``interval_s`` apart for every thread that shares it (the
browser pool spaces its keywords' first page loads with one); `engine_pacer` hands out one
limiter per engine and interval for the whole process, so every page an engine's adapters load
(a keyword's later pages, the engines asked after the first) is spaced, whichever worker loads it.
"""

from __future__ import annotations

import threading
import time

_PACERS: dict[tuple[str, float], RateLimiter] = {}
_PACERS_LOCK = threading.Lock()


class RateLimiter:
    """Spaces events (page loads) at least ``interval_s`` apart across all threads using it.

    Each caller reserves the next free slot and sleeps until it, so waiting holds no lock.
    Share one instance between pools that hit the same engine.
    """

    def __init__(self, interval_s: float) -> None:
        if interval_s < 0:
            raise ValueError("interval_s must be >= 0")
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self, cancel: threading.Event | None = None) -> bool:
        """Block until this caller's slot; False if ``cancel`` was set while waiting."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval_s
        delay = slot - now
        if delay <= 0:
            return True
        if cancel is None:
            time.sleep(delay)
            return True
        return not cancel.wait(delay)


def engine_pacer(engine: str, interval_s: float) -> RateLimiter:
    """The process's limiter for ``engine``'s page loads at ``interval_s`` (one per engine and interval)."""
    with _PACERS_LOCK:
        found = _PACERS.get((engine, interval_s))
        if found is None:
            found = _PACERS[(engine, interval_s)] = RateLimiter(interval_s)
        return found
