"""The browser pool: parallel keywords, politeness, crashes, hangs, retries and clean shutdown.

Pool logic is first checked with fake drivers and engines (no browser, fast); then with real
headless Chromium against the local search site, killing and hanging real browsers.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from selenium.common.exceptions import InvalidSessionIdException

from facescale.scraper.browser import BrowserPool, ManagedDriver, RateLimiter, SearchResult, make_driver
from facescale.scraper.candidates import Candidate
from facescale.scraper.engines import DemoEngine

if TYPE_CHECKING:
    from conftest import Hit, SearchSite


# --------------------------------------------------------------------------- fakes (no browser)


class FakeDriver:
    """Stands in for a WebDriver: counts quits and kills."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.quits = 0
        self.kills = 0

    def get(self, url: str) -> None:
        pass

    def quit(self) -> None:
        self.quits += 1

    def kill(self) -> None:
        self.kills += 1


class FakeFactory:
    def __init__(self, fail: int = 0) -> None:
        self.fail = fail  # the first `fail` starts raise
        self.made: list[FakeDriver] = []
        self.lock = threading.Lock()

    def __call__(self) -> FakeDriver:
        with self.lock:
            if self.fail:
                self.fail -= 1
                raise OSError("chromedriver: no such file")
            driver = FakeDriver(len(self.made))
            self.made.append(driver)
            return driver


class FakeEngine:
    """Yields `limit` candidates; keywords in `crash` raise on their first n attempts, `bug` always raises."""

    name = "fake"
    max_concurrency = 3

    def __init__(self, crash: dict[str, int] | None = None, bug: set[str] | None = None, sleep_s: float = 0.0) -> None:
        self.crash = dict(crash or {})
        self.bug = bug or set()
        self.sleep_s = sleep_s
        self.calls: list[tuple[str, int]] = []  # (keyword, driver number)
        self.lock = threading.Lock()

    def search_url(self, keyword: str) -> str:
        return f"fake://{keyword}"

    def collect(
        self, driver: Any, keyword: str, limit: int, report: Callable[[str], None] | None = None
    ) -> Iterator[Candidate]:
        with self.lock:
            self.calls.append((keyword, driver.number))
            crash = self.crash.get(keyword, 0)
            if crash:
                self.crash[keyword] = crash - 1
        if crash:
            raise InvalidSessionIdException("invalid session id")
        if keyword in self.bug:
            raise KeyError("results")
        time.sleep(self.sleep_s)
        for i in range(limit + 5):  # more than asked: the pool stops at the limit too
            yield Candidate(keyword, f"http://img.test/{keyword}/{i}.jpg", None, i)


def _by_keyword(results: Iterator[SearchResult]) -> dict[str, SearchResult]:
    out: dict[str, SearchResult] = {}
    for result in results:
        assert result.keyword not in out, "one result per keyword"
        out[result.keyword] = result
    return out


def test_rate_limiter_spaces_calls_across_threads() -> None:
    limiter = RateLimiter(0.1)
    stamps: list[float] = []
    lock = threading.Lock()

    def call() -> None:
        limiter.wait()
        with lock:
            stamps.append(time.monotonic())

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    # slots are exactly 0.1 s apart; threads wake a few ms late
    assert all(b - a >= 0.08 for a, b in itertools.pairwise(stamps))
    assert stamps[-1] - stamps[0] >= 0.5 - 0.02
    cancel = threading.Event()
    cancel.set()
    limiter2 = RateLimiter(10.0)
    assert limiter2.wait(cancel) is True  # the first slot is free at once
    assert limiter2.wait(cancel) is False  # the second would wait 10 s: cancelled


def test_pool_retries_crashes_reports_bugs_and_reuses_drivers() -> None:
    engine = FakeEngine(crash={"b": 1, "c": 5}, bug={"d"})
    factory = FakeFactory()
    with BrowserPool(engine, workers=2, make_driver=factory, politeness_delay_s=0, max_retries=2) as pool:
        results = _by_keyword(pool.search(["a", "b", "c", "d", "e"], limit=3))
    assert set(results) == {"a", "b", "c", "d", "e"}
    assert results["a"].ok and results["a"].attempts == 1 and len(results["a"].candidates) == 3
    assert results["b"].ok and results["b"].attempts == 2  # crashed once, fresh browser, success
    assert results["c"].attempts == 3 and results["c"].candidates == []
    assert results["c"].error == "browser_error: InvalidSessionIdException: invalid session id"
    assert results["d"].attempts == 1 and results["d"].error == "engine_error: KeyError: 'results'"  # not retried
    # a crash kills that browser (never reused); every browser is ended by the time the pool closes
    assert all(d.quits + d.kills == 1 for d in factory.made)
    assert sum(d.kills for d in factory.made) == 1 + 3  # one per failed attempt


def test_pool_reports_a_browser_that_never_starts() -> None:
    factory = FakeFactory(fail=100)
    with BrowserPool(FakeEngine(), workers=1, make_driver=factory, politeness_delay_s=0, max_retries=1) as pool:
        [result] = list(pool.search(["a"], limit=1))
    assert result.attempts == 2 and result.candidates == []
    assert result.error == "browser_start: OSError: chromedriver: no such file"


def test_pool_restarts_browsers_every_k_keywords_and_caps_workers() -> None:
    engine = FakeEngine()
    factory = FakeFactory()
    pool = BrowserPool(engine, workers=8, make_driver=factory, politeness_delay_s=0, restart_every=2)
    assert pool.workers == 3  # the engine's max_concurrency
    with pool:
        results = _by_keyword(pool.search((f"k{i}" for i in range(12)), limit=1))
    assert len(results) == 12 and all(r.ok for r in results.values())
    per_driver: dict[int, int] = {}
    for _, number in engine.calls:
        per_driver[number] = per_driver.get(number, 0) + 1
    assert max(per_driver.values()) <= 2
    assert all(d.quits == 1 for d in factory.made)  # restarted gracefully, nothing leaked


def test_closing_a_search_early_cancels_the_rest() -> None:
    engine = FakeEngine(sleep_s=0.05)
    with BrowserPool(engine, workers=1, make_driver=FakeFactory(), politeness_delay_s=0) as pool:
        search = pool.search((f"k{i}" for i in range(1000)), limit=1)
        first = next(search)
        search.close()
        assert first.ok
        time.sleep(0.2)
        assert len(engine.calls) <= 4  # the input is read lazily; queued keywords were dropped
        again = list(pool.search(["x"], limit=1))  # the pool is still usable
        assert [r.keyword for r in again] == ["x"]
    with pytest.raises(RuntimeError, match="closed"):
        pool.start()


def test_pool_validates_arguments() -> None:
    with pytest.raises(ValueError, match="workers"):
        BrowserPool(FakeEngine(), workers=0)
    with pytest.raises(ValueError, match="limit"):
        list(BrowserPool(FakeEngine(), make_driver=FakeFactory()).search(["a"], limit=0))


# --------------------------------------------------------------------------- real browsers


class RecordingFactory:
    """make_driver with test timeouts, remembering every browser's processes and profile."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = {"page_load_timeout_s": 15.0, **kwargs}
        self.drivers: list[ManagedDriver] = []
        self.pids: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self) -> ManagedDriver:
        driver = make_driver(**self.kwargs)
        with self.lock:
            self.drivers.append(driver)
            self.pids.update(p.pid for p in driver.processes())
        return driver

    def assert_all_gone(self) -> None:
        alive = []
        for pid in self.pids:
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append((pid, proc.name()))
            except psutil.NoSuchProcess:
                pass
        assert alive == [], f"browser processes left: {alive}"
        dirs = {d.profile_dir for d in self.drivers}
        for proc in psutil.process_iter(["cmdline", "status"]):
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            assert not any(d and d in cmdline for d in dirs), f"left running: {cmdline[:200]}"
        assert not any(d and os.path.exists(d) for d in dirs), "profile directories left behind"


def _rows(result: SearchResult) -> list[tuple[str, str | None, int]]:
    return [(c.source_url, c.page_url, c.rank) for c in result.candidates]


@pytest.mark.browser
def test_parallel_keywords_politely_and_nothing_left_behind(search_site: SearchSite) -> None:
    keywords = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Katherine Johnson", "Nobody At All"]
    factory = RecordingFactory()
    delay = 0.6
    with BrowserPool(
        DemoEngine(search_site.base_url), workers=2, make_driver=factory, politeness_delay_s=delay
    ) as pool:
        results = _by_keyword(pool.search(keywords, limit=100))
    assert set(results) == set(keywords)
    for keyword in keywords:
        assert results[keyword].error is None and results[keyword].attempts == 1
        assert _rows(results[keyword]) == search_site.expected(keyword)
    assert results["Nobody At All"].candidates == []
    assert len(factory.drivers) == 2  # each worker kept its browser for every keyword
    stamps = sorted(hit.at for hit in search_site.hits)
    assert len(stamps) == len(keywords)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # The limiter spaces navigation starts by the delay; each request then takes its own time to
    # reach the server (10-70 ms, over 130 ms on a loaded machine), which moves one gap by that
    # much and the next by as much the other way; the span moves by the first and last requests'
    # (0.23 s short seen with the cluster tier sharing the 2 cores). Without the limiter two
    # workers arrive together.
    assert min(gaps) >= delay / 2, gaps
    assert stamps[-1] - stamps[0] >= (len(stamps) - 1) * delay - 0.4, gaps
    factory.assert_all_gone()


def _browser_of(factory: RecordingFactory, peer_port: int) -> ManagedDriver:
    """The browser whose network process holds the TCP connection from ``peer_port``."""
    for driver in factory.drivers:
        for proc in driver.processes():
            try:
                if any(c.laddr and c.laddr.port == peer_port for c in proc.net_connections(kind="tcp")):
                    return driver
            except psutil.Error:
                continue
    raise AssertionError(f"no browser holds a connection from port {peer_port}")


@pytest.mark.browser
def test_a_killed_browser_is_restarted_and_its_keyword_retried(search_site: SearchSite) -> None:
    search_site.delays["Slow Person"] = 2.0
    factory = RecordingFactory()
    first_hit: list[Hit] = []
    seen = threading.Event()

    def on_hit(hit: Hit) -> None:
        if hit.keyword == "Slow Person" and not first_hit:
            first_hit.append(hit)
            seen.set()

    killed: list[int] = []

    def killer() -> None:
        if not seen.wait(60):
            return
        victim = _browser_of(factory, first_hit[0].peer_port)
        for proc in victim.processes():  # Chromium only: chromedriver stays, the browser dies mid-load
            if proc.name().startswith("chromium"):
                proc.kill()
                killed.append(proc.pid)

    search_site.on_hit.append(on_hit)
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    keywords = ["Alan Turing", "Slow Person", "Grace Hopper"]
    with BrowserPool(
        DemoEngine(search_site.base_url), workers=2, make_driver=factory, politeness_delay_s=0, max_retries=2
    ) as pool:
        results = _by_keyword(pool.search(keywords, limit=50))
    thread.join(5)
    assert killed, "the test did not kill a browser"
    slow = results["Slow Person"]
    assert slow.error is None and slow.attempts == 2
    assert _rows(slow) == search_site.expected("Slow Person")
    for keyword in ("Alan Turing", "Grace Hopper"):
        assert results[keyword].error is None and _rows(results[keyword]) == search_site.expected(keyword)
    assert len(factory.drivers) == 3  # the killed browser was replaced
    factory.assert_all_gone()


@pytest.mark.browser
def test_a_hung_page_times_out_is_retried_and_reported(search_site: SearchSite) -> None:
    search_site.hang.add("Hang Person")
    factory = RecordingFactory(page_load_timeout_s=3.0)
    started = time.monotonic()
    with BrowserPool(
        DemoEngine(search_site.base_url), workers=2, make_driver=factory, politeness_delay_s=0, max_retries=1
    ) as pool:
        results = _by_keyword(pool.search(["Hang Person", "Grace Hopper"], limit=50))
    hung = results["Hang Person"]
    assert hung.attempts == 2 and hung.candidates == []
    assert hung.error is not None and hung.error.startswith("timeout: TimeoutException"), hung.error
    assert "Hang Person" in [h.keyword for h in search_site.hits]
    assert results["Grace Hopper"].error is None  # the other browser was not held up
    assert _rows(results["Grace Hopper"]) == search_site.expected("Grace Hopper")
    assert time.monotonic() - started < 30
    factory.assert_all_gone()


@pytest.mark.browser
def test_the_watchdog_kills_a_keyword_that_runs_too_long(search_site: SearchSite) -> None:
    """Page loads may wait 60 s here; the keyword timeout (2.5 s) kills the browser instead."""
    search_site.hang.add("Hang Person")
    factory = RecordingFactory(page_load_timeout_s=60.0)
    started = time.monotonic()
    with BrowserPool(
        DemoEngine(search_site.base_url),
        workers=1,
        make_driver=factory,
        politeness_delay_s=0,
        max_retries=1,
        keyword_timeout_s=2.5,
    ) as pool:
        [result] = list(pool.search(["Hang Person"], limit=10))
    elapsed = time.monotonic() - started
    assert result.attempts == 2 and result.candidates == []
    assert result.error == "timeout: no result within 2.5 s"
    assert elapsed < 20, elapsed
    factory.assert_all_gone()
