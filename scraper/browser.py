"""Browsers for the search workers: a WebDriver factory (headless Chromium or Selenium Grid) and a pool.

`make_driver` starts one browser: local headless Chromium through chromedriver, with a fresh
profile directory that is deleted on quit, or a session on a Selenium Grid. Every command
is bounded: page loads and scripts by WebDriver timeouts, and each HTTP call to the driver
by the client timeout, so a hung browser surfaces as an exception instead of a stuck thread.

`BrowserPool` runs N worker threads, each owning one browser, started on its first keyword
and reused for the next ones (restarted every ``restart_every`` keywords to bound Chromium's
memory). ``pool.search(keywords, limit)`` yields one `SearchResult` per keyword as keywords
finish, in any order. Politeness: one `RateLimiter` (`pacing.py`) spaces the search-page loads of all
workers at least ``politeness_delay_s`` apart, and the pool never runs more browsers than
the engine's ``max_concurrency``. Robustness: a browser that crashes (chromedriver or
Chromium died) or hangs (a page load or command past its timeout, or the whole keyword past
``keyword_timeout_s``, enforced by a watchdog that kills the browser) is killed, restarted,
and the keyword retried up to ``max_retries`` times; after that the keyword comes back with
an ``error``, never silently dropped. Closing the pool quits every browser and kills what
is left of its process tree, so no chromium or chromedriver outlives it.

Errors are ``"<code>: <detail>"`` with code one of ``timeout``, ``browser_error``,
``browser_start``, ``engine_error`` (a bug or page the adapter cannot read; not retried),
``cancelled``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from http.client import HTTPException
from urllib.parse import unquote, urlsplit, urlunsplit

import psutil
import urllib3.exceptions
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver import ChromeOptions
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.chromium.remote_connection import ChromiumRemoteConnection
from selenium.webdriver.remote.client_config import ClientConfig
from selenium.webdriver.remote.webdriver import WebDriver

from .candidates import Candidate
from .engines import SearchEngine
from .pacing import RateLimiter

log = logging.getLogger(__name__)

__all__ = [
    "CHROMIUM_FLAGS",
    "BrowserPool",
    "DriverFactory",
    "ManagedDriver",
    "RateLimiter",
    "SearchResult",
    "chromium_options",
    "make_driver",
]

# What headless Chromium needs here (see ../shared/DESIGN.md), plus a desktop-sized window so
# result grids lay out (and lazy-load) as they would for a person.
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1024",
)
PROFILE_PREFIX = "facescale-chromium-"

DriverFactory = Callable[[], WebDriver]

# A browser or its driver died or stopped answering: worth a fresh browser and another try.
_BROWSER_ERRORS: tuple[type[BaseException], ...] = (
    WebDriverException,
    urllib3.exceptions.HTTPError,
    HTTPException,
    OSError,  # ConnectionError, socket timeouts
)
_TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutException,
    urllib3.exceptions.TimeoutError,
    TimeoutError,
)


# ----------------------------------------------------------------------------- drivers


class ManagedDriver(WebDriver):
    """A Remote WebDriver that cleans up after itself.

    For a local browser it owns the chromedriver service and the profile directory:
    `quit` ends the session, stops chromedriver, kills any process of the tree still alive
    and deletes the profile; `kill` does the same at once without talking to the browser
    (for one that hangs), and is safe to call from another thread while a command is
    blocked (the command then fails). For a Grid session `kill` ends the session in the
    background; the Grid node owns the processes.
    """

    def __init__(
        self,
        command_executor: ChromiumRemoteConnection,
        options: ChromeOptions,
        *,
        service: ChromeService | None = None,
        profile_dir: str | None = None,
    ) -> None:
        self._service = service
        self.profile_dir = profile_dir
        self.quit_timeout_s = 5.0
        self._closed = False
        self._close_lock = threading.Lock()
        self._closed_event = threading.Event()  # set when the first quit/kill has finished
        super().__init__(command_executor=command_executor, options=options)

    @property
    def local(self) -> bool:
        return self._service is not None

    @property
    def service_pid(self) -> int | None:
        """The chromedriver process id (local browsers only)."""
        process = self._service.process if self._service is not None else None
        return process.pid if process is not None else None

    def processes(self) -> list[psutil.Process]:
        """chromedriver and every process below it, plus any process using our profile."""
        found: dict[int, psutil.Process] = {}
        pid = self.service_pid
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                found[root.pid] = root
                for child in root.children(recursive=True):
                    found[child.pid] = child
        if self.profile_dir:
            for proc in _profile_processes(self.profile_dir):
                found.setdefault(proc.pid, proc)
        return list(found.values())

    def quit(self) -> None:
        """End the session (waiting at most ``quit_timeout_s``), then kill whatever is left."""
        if not self._claim_close():
            return
        try:
            procs = self.processes()
            ending = threading.Thread(target=self._end_session, name="facescale-browser-quit", daemon=True)
            ending.start()
            ending.join(self.quit_timeout_s)
            if ending.is_alive():  # a hung browser: killing it below makes the call return
                log.warning("browser did not quit within %g s; killing it", self.quit_timeout_s)
            self._cleanup(procs, grace_s=0.0 if ending.is_alive() else 2.0)
        finally:
            self._closed_event.set()

    def kill(self) -> None:
        """Kill the browser now, without asking it; safe from another thread while a command blocks."""
        if not self._claim_close():
            return
        try:
            if self.local:
                self._cleanup(self.processes(), grace_s=0.0)
            else:
                threading.Thread(target=self._end_session, name="facescale-grid-quit", daemon=True).start()
        finally:
            self._closed_event.set()

    def _claim_close(self) -> bool:
        """True for the first quit/kill; later callers wait (bounded) until it has finished."""
        with self._close_lock:
            first = not self._closed
            self._closed = True
        if not first:
            self._closed_event.wait(20.0)
        return first

    def _end_session(self) -> None:
        try:
            WebDriver.quit(self)
        except Exception as exc:  # a dead browser: its processes are killed by the caller
            log.debug("quit failed (%s); killing the browser", exc)

    def _cleanup(self, procs: list[psutil.Process], grace_s: float) -> None:
        service = self._service.process if self._service is not None else None
        browser = [p for p in procs if service is None or p.pid != service.pid]
        if grace_s:
            browser = _wait_gone(browser, grace_s)
        for proc in browser:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if service is not None and service.poll() is None:
            service.terminate()
            try:
                service.wait(timeout=2)
            except subprocess.TimeoutExpired:
                service.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    service.wait(timeout=2)
        left = _wait_gone(browser, 3.0)
        if left:
            log.warning("browser processes still alive after kill: %s", [p.pid for p in left])
        if self.profile_dir:
            shutil.rmtree(self.profile_dir, ignore_errors=True)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until ``procs`` have exited (zombies count as gone); the ones still alive."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    return alive


def _profile_processes(profile_dir: str) -> list[psutil.Process]:
    marker = f"--user-data-dir={profile_dir}"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if marker in cmdline:
            found.append(proc)
    return found


def chromium_options(
    chromium_binary: str | None,
    profile_dir: str | None,
    *,
    page_load_timeout_s: float,
    script_timeout_s: float,
    extra_args: Sequence[str] = (),
) -> ChromeOptions:
    """Options for headless Chromium with bounded page loads and scripts, no implicit waits."""
    options = ChromeOptions()
    if chromium_binary:
        options.binary_location = chromium_binary
    for flag in (*CHROMIUM_FLAGS, *extra_args):
        options.add_argument(flag)
    if profile_dir:
        options.add_argument(f"--user-data-dir={profile_dir}")
    # "eager": navigation returns at DOMContentLoaded, not after every thumbnail loaded;
    # adapters poll for their results anyway.
    options.page_load_strategy = "eager"
    options.timeouts = {
        "pageLoad": int(page_load_timeout_s * 1000),
        "script": int(script_timeout_s * 1000),
        "implicit": 0,
    }
    return options


def grid_credentials(grid_url: str) -> tuple[str, str | None, str | None]:
    """A Grid URL without its ``user:password@`` and that user and password (basic auth, sent by ClientConfig)."""
    parts = urlsplit(grid_url)
    if parts.username is None:
        return grid_url, None, None
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.username), unquote(parts.password or "")


def make_driver(
    chromium_binary: str = "/usr/bin/chromium",
    chromedriver: str = "/usr/bin/chromedriver",
    grid_url: str | None = None,
    *,
    page_load_timeout_s: float = 20.0,
    script_timeout_s: float | None = None,
    command_timeout_s: float | None = None,
    session_timeout_s: float | None = None,
    extra_args: Sequence[str] = (),
) -> ManagedDriver:
    """Start a browser: local headless Chromium, or a Chrome session on the Grid at ``grid_url``.

    Args:
        chromium_binary: the Chromium executable (local only; a Grid node knows its own).
        chromedriver: the chromedriver executable (local only). Selenium Manager is never used.
        grid_url: Remote WebDriver URL of a Selenium Grid, e.g. ``http://grid:4444``.
        page_load_timeout_s: longest navigation.
        script_timeout_s: longest script (default: the page-load timeout).
        command_timeout_s: longest HTTP call to chromedriver or the Grid (default: page-load
            timeout + 15 s, so WebDriver's own timeouts fire first).
        session_timeout_s: Grid only: longest wait for the new session, which the hub queues
            while every slot is busy (default: ``command_timeout_s``). A client that gives up
            sooner than the hub leaves the hub to start a session nobody uses, holding a slot
            until the hub's session timeout.
        extra_args: more Chromium flags.

    Raises:
        WebDriverException (or an OSError) when the browser cannot be started.
    """
    script_timeout_s = page_load_timeout_s if script_timeout_s is None else script_timeout_s
    command_timeout_s = page_load_timeout_s + 15.0 if command_timeout_s is None else command_timeout_s
    if grid_url:
        options = chromium_options(
            None,
            None,
            page_load_timeout_s=page_load_timeout_s,
            script_timeout_s=script_timeout_s,
            extra_args=extra_args,
        )
        wait = max(command_timeout_s, session_timeout_s or 0.0)
        address, username, password = grid_credentials(grid_url)
        config = ClientConfig(remote_server_addr=address, timeout=int(wait) or 1, username=username,
                              password=password)
        executor = ChromiumRemoteConnection(
            remote_server_addr=address, vendor_prefix="goog", browser_name="chrome", client_config=config
        )
        driver = ManagedDriver(executor, options)
        config.timeout = int(command_timeout_s) or 1  # read per request: the session's calls are bounded again
        return driver

    profile = tempfile.mkdtemp(prefix=PROFILE_PREFIX)
    service = ChromeService(executable_path=chromedriver)
    try:
        options = chromium_options(
            chromium_binary,
            profile,
            page_load_timeout_s=page_load_timeout_s,
            script_timeout_s=script_timeout_s,
            extra_args=extra_args,
        )
        service.start()
        config = ClientConfig(remote_server_addr=service.service_url, timeout=int(command_timeout_s) or 1)
        executor = ChromiumRemoteConnection(
            remote_server_addr=service.service_url,
            vendor_prefix="goog",
            browser_name="chrome",
            ignore_proxy=True,  # chromedriver is on localhost; never route it through $HTTP_PROXY
            client_config=config,
        )
        return ManagedDriver(executor, options, service=service, profile_dir=profile)
    except BaseException:
        _stop_service(service, profile)
        raise


def _stop_service(service: ChromeService, profile_dir: str) -> None:
    """Clean up after a browser that did not start: its chromedriver, any Chromium, the profile."""
    procs: list[psutil.Process] = []
    if service.process is not None:
        with contextlib.suppress(psutil.Error):
            procs = psutil.Process(service.process.pid).children(recursive=True)
        with contextlib.suppress(Exception):
            service.process.kill()
            service.process.wait(timeout=2)
    procs += _profile_processes(profile_dir)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait_gone(procs, 2.0)
    shutil.rmtree(profile_dir, ignore_errors=True)


def default_driver() -> WebDriver:
    """Local headless Chromium from /usr/bin with the default timeouts."""
    return make_driver()


def _kill(driver: WebDriver) -> None:
    """End a browser without waiting for it (a plain WebDriver gets a best-effort quit)."""
    kill = getattr(driver, "kill", None)
    try:
        if callable(kill):
            kill()
        else:
            driver.quit()
    except Exception as exc:
        log.debug("killing the browser failed: %s", exc)


def _quit(driver: WebDriver) -> None:
    try:
        driver.quit()
    except Exception as exc:
        log.debug("quitting the browser failed: %s", exc)
        _kill(driver)


# ----------------------------------------------------------------------------- pool


@dataclass(frozen=True)
class SearchResult:
    """What one keyword produced: candidates in rank order, or an error after ``attempts`` tries."""

    keyword: str
    candidates: list[Candidate]
    error: str | None = None
    attempts: int = 1
    notes: list[str] = field(default_factory=list)  # what the engine reported (e.g. page_load_timeout)
    seconds: float = 0.0  # wall time a browser spent on it, retries included

    @property
    def ok(self) -> bool:
        return self.error is None


class _KeywordTimeout(Exception):
    """The watchdog killed the browser: the keyword ran past keyword_timeout_s."""


@dataclass
class _Task:
    keyword: str
    limit: int
    results: queue.Queue[SearchResult]
    cancel: threading.Event


class _Worker:
    """One thread and the browser it owns."""

    def __init__(self, pool: BrowserPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.driver: WebDriver | None = None
        self.uses = 0  # keywords searched by the current browser
        self.thread = threading.Thread(target=self._run, name=f"facescale-browser-{index}", daemon=True)
        self._lock = threading.Lock()
        self._attempt_id = 0  # the attempt the watchdog guards; bumped when it ends
        self._expired_id = -1  # the attempt the watchdog killed

    def _run(self) -> None:
        try:
            while True:
                task = self.pool._tasks.get()
                if task is None:
                    return
                started = time.monotonic()
                try:
                    result = self._search(task)
                except Exception as exc:  # a bug here must not lose the keyword or the thread
                    log.exception("browser worker %d failed on %r", self.index, task.keyword)
                    result = SearchResult(task.keyword, [], f"engine_error: {_describe(exc)}", 0)
                result = replace(result, seconds=time.monotonic() - started)
                task.results.put(result)
        finally:
            self.discard(graceful=True)

    def _search(self, task: _Task) -> SearchResult:
        pool = self.pool
        error = "cancelled"
        attempts = 0
        while attempts <= pool.max_retries:
            if task.cancel.is_set() or pool._closing.is_set():
                return SearchResult(task.keyword, [], "cancelled" if attempts == 0 else error, attempts)
            attempts += 1
            try:
                driver = self._ensure_driver()
            except Exception as exc:
                error = f"browser_start: {_describe(exc)}"
                log.warning("browser %d did not start (attempt %d for %r): %s", self.index, attempts, task.keyword, exc)
                continue
            if not pool._limiter.wait(task.cancel):
                return SearchResult(task.keyword, [], "cancelled", attempts)
            notes: list[str] = []
            try:
                candidates = self._attempt(driver, task, notes)
            except _KeywordTimeout:
                error = f"timeout: no result within {pool.keyword_timeout_s:g} s"
            except _TIMEOUT_ERRORS as exc:
                error = f"timeout: {_describe(exc)}"
            except _BROWSER_ERRORS as exc:
                error = f"browser_error: {_describe(exc)}"
            except Exception as exc:  # the adapter's own bug: retrying will not help
                log.exception("engine %s failed on %r", pool.engine.name, task.keyword)
                return SearchResult(task.keyword, [], f"engine_error: {_describe(exc)}", attempts)
            else:
                self.uses += 1
                if self.driver is not None and pool.restart_every and self.uses >= pool.restart_every:
                    log.info("browser %d: restarting after %d keywords", self.index, self.uses)
                    self.discard(graceful=True)
                return SearchResult(task.keyword, candidates, None, attempts, notes)
            log.warning(
                "browser %d: attempt %d/%d for %r failed: %s",
                self.index,
                attempts,
                pool.max_retries + 1,
                task.keyword,
                error,
            )
            self.discard(graceful=False)
        return SearchResult(task.keyword, [], error, attempts)

    def _ensure_driver(self) -> WebDriver:
        if self.driver is None:
            started = time.monotonic()
            driver = self.pool._make_driver()
            try:
                # A fresh browser's first navigation is slow to start (0.8 s here, 0.07 s after
                # this); warming it up keeps page loads as evenly spaced as the limiter releases them.
                driver.get("about:blank")
            except TimeoutException:  # a busy machine, not a broken browser: the real page load will tell
                log.info("browser %d: warm-up page timed out; going on", self.index)
            except BaseException:
                _kill(driver)
                raise
            self.driver = driver
            self.uses = 0
            log.info("browser %d started in %.1f s", self.index, time.monotonic() - started)
        return self.driver

    def _attempt(self, driver: WebDriver, task: _Task, notes: list[str]) -> list[Candidate]:
        pool = self.pool
        with self._lock:
            self._attempt_id += 1
            token = self._attempt_id
        watchdog = threading.Timer(pool.keyword_timeout_s, self._expire, args=(token, driver))
        watchdog.daemon = True
        watchdog.start()
        found: list[Candidate] = []
        try:
            collected = pool.engine.collect(driver, task.keyword, task.limit, report=notes.append)
            try:
                for candidate in collected:
                    found.append(candidate)
                    if len(found) >= task.limit or task.cancel.is_set() or pool._closing.is_set():
                        break
            finally:
                close = getattr(collected, "close", None)
                if callable(close):
                    close()
        except Exception as exc:
            if self._was_expired(token):
                raise _KeywordTimeout from exc
            raise
        finally:
            watchdog.cancel()
            with self._lock:
                self._attempt_id += 1  # a watchdog firing from now on finds a stale token
        if self._was_expired(token):  # finished as the watchdog fired: the result stands, the browser is gone
            self.discard(graceful=False)
        return found

    def _expire(self, token: int, driver: WebDriver) -> None:
        with self._lock:
            if token != self._attempt_id:
                return
            self._expired_id = token
        log.warning("browser %d: keyword ran past %g s; killing the browser", self.index, self.pool.keyword_timeout_s)
        _kill(driver)

    def _was_expired(self, token: int) -> bool:
        with self._lock:
            return self._expired_id == token

    def discard(self, graceful: bool) -> None:
        driver, self.driver = self.driver, None
        if driver is not None:
            (_quit if graceful else _kill)(driver)

    def kill_browser(self) -> None:
        """From another thread: kill the browser so a blocked command returns."""
        driver = self.driver
        if driver is not None:
            _kill(driver)


class BrowserPool:
    """Search keywords with N browsers in parallel (see the module docstring).

    Usage::

        with BrowserPool(engine, workers=4, make_driver=factory, politeness_delay_s=1.0) as pool:
            for result in pool.search(keywords, limit=100):
                ...

    Args:
        engine: the adapter; shared by all workers.
        workers: browsers wanted; capped at ``engine.max_concurrency``.
        make_driver: starts one browser (default: local headless Chromium); called lazily
            from the worker threads.
        politeness_delay_s: least time between two search-page loads of this pool.
        max_retries: further attempts after a crash or timeout (attempts <= 1 + max_retries).
        keyword_timeout_s: longest time one attempt at one keyword may take.
        restart_every: restart a browser after this many keywords (0: never).
        rate_limiter: a limiter shared with other pools on the same engine (overrides
            ``politeness_delay_s``).
    """

    def __init__(
        self,
        engine: SearchEngine,
        *,
        workers: int = 4,
        make_driver: DriverFactory | None = None,
        politeness_delay_s: float = 1.0,
        max_retries: int = 2,
        keyword_timeout_s: float = 120.0,
        restart_every: int = 50,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if keyword_timeout_s <= 0:
            raise ValueError("keyword_timeout_s must be > 0")
        if restart_every < 0:
            raise ValueError("restart_every must be >= 0")
        self.engine = engine
        cap = getattr(engine, "max_concurrency", workers) or workers
        self.workers = max(1, min(workers, cap))
        if self.workers < workers:
            log.info("engine %s allows %d browsers at once; using %d of %d", engine.name, cap, self.workers, workers)
        self.max_retries = max_retries
        self.keyword_timeout_s = keyword_timeout_s
        self.restart_every = restart_every
        self._make_driver: DriverFactory = make_driver or default_driver
        self._limiter = rate_limiter or RateLimiter(politeness_delay_s)
        self._tasks: queue.Queue[_Task | None] = queue.Queue()
        self._closing = threading.Event()
        self._started = False
        self._state_lock = threading.Lock()
        self._workers = [_Worker(self, i) for i in range(self.workers)]

    def __enter__(self) -> BrowserPool:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the worker threads (browsers start with their first keyword)."""
        with self._state_lock:
            if self._closing.is_set():
                raise RuntimeError("the browser pool is closed")
            if not self._started:
                for worker in self._workers:
                    worker.thread.start()
                self._started = True

    def search(self, keywords: Iterable[str], limit: int) -> Iterator[SearchResult]:
        """Search every keyword for up to ``limit`` candidates; one result per keyword, in any order.

        Keywords are read lazily (a few per worker ahead), so a long iterable is fine. Closing
        the iterator early cancels the keywords not started yet.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.start()
        return self._search(iter(keywords), limit)

    def _search(self, keywords: Iterator[str], limit: int) -> Iterator[SearchResult]:
        results: queue.Queue[SearchResult] = queue.Queue()
        cancel = threading.Event()
        window = 2 * self.workers
        pending = 0
        try:
            exhausted = False
            while True:
                while not exhausted and pending < window:
                    keyword = next(keywords, None)
                    if keyword is None:
                        exhausted = True
                        break
                    self._tasks.put(_Task(keyword, limit, results, cancel))
                    pending += 1
                if pending == 0:
                    return
                result = self._next_result(results)
                pending -= 1
                yield result
        finally:
            cancel.set()

    def _next_result(self, results: queue.Queue[SearchResult]) -> SearchResult:
        while True:
            try:
                return results.get(timeout=0.5)
            except queue.Empty:
                if self._closing.is_set():
                    raise RuntimeError("the browser pool was closed during a search") from None
                if not any(w.thread.is_alive() for w in self._workers):
                    raise RuntimeError("every browser worker has stopped") from None

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the workers and end every browser; kills browsers still busy after ``timeout_s``."""
        with self._state_lock:
            if self._closing.is_set():
                return
            self._closing.set()
            started = self._started
        while True:  # keywords not started yet are dropped (their searches were cancelled)
            try:
                self._tasks.get_nowait()
            except queue.Empty:
                break
        if not started:
            return
        for _ in self._workers:
            self._tasks.put(None)
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        busy = [w for w in self._workers if w.thread.is_alive()]
        for worker in busy:  # blocked in a browser command: make it fail
            log.warning("browser %d still busy at close; killing it", worker.index)
            worker.kill_browser()
        for worker in busy:
            worker.thread.join(5.0)
            if worker.thread.is_alive():
                log.error("browser worker %d did not stop", worker.index)
                worker.kill_browser()


def _describe(exc: BaseException) -> str:
    """One line: the exception type and the first line of its message."""
    text = getattr(exc, "msg", None) or str(exc)
    first = text.strip().splitlines()[0] if text and text.strip() else ""
    first = first.split("; For documentation on this error")[0]  # selenium's link, the same every time
    name = type(exc).__name__
    return f"{name}: {first[:300]}" if first else name
