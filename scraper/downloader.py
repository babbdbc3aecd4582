"""Fetch candidate image URLs concurrently over HTTP and verify each body (one FetchResult per URL).

An asyncio core on aiohttp (one ``ClientSession``, a global and a per-host concurrency
limit, a total time limit per attempt, capped bodies, manual redirects, tenacity retries)
behind a thread-safe synchronous facade, because the scraper's callers are threads::

    with Downloader(DownloadLimits.from_settings(settings.scraper)) as dl:
        results = dl.fetch_all(urls)          # or dl.submit(urls) -> concurrent Future

or, inside a running event loop::

    async with Downloader(limits) as dl:
        results = await dl.fetch_many(urls)

Nothing is raised for a bad URL: every URL yields exactly one :class:`FetchResult`, whose
``error`` is ``None`` (accepted) or one of the reason codes in :data:`REASONS`, an
``http_<status>`` code, or one of :func:`facescale.scraper.imagecheck.check_image`'s codes.
The Content-Type header is never trusted: the body is sniffed and fully decoded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import hashlib
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Any, NamedTuple

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt, wait_exponential, wait_random
from tenacity.wait import wait_base
from yarl import URL

from .imagecheck import ImageCheck, check_image

log = logging.getLogger(__name__)

class DownloadReason(StrEnum):
    """Why a result was not stored (besides ``http_<status>`` and `imagecheck.check_image`'s codes)."""

    INVALID_URL = "invalid_url"
    BAD_REDIRECT = "bad_redirect"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    SSL_ERROR = "ssl_error"
    BAD_RESPONSE = "bad_response"
    NOAI = "noai"
    BODY_TOO_LARGE = "body_too_large"
    INTERNAL_ERROR = "internal_error"


#: What each download reason means.
REASONS: dict[str, str] = {
    DownloadReason.INVALID_URL: "not an absolute http(s) URL; no request was made",
    DownloadReason.BAD_REDIRECT: "a redirect without a usable http(s) Location",
    DownloadReason.TOO_MANY_REDIRECTS: "more than max_redirects redirects (or a loop)",
    DownloadReason.TIMEOUT: "an attempt took longer than timeout_s (after retries)",
    DownloadReason.CONNECTION_ERROR: "refused, reset, DNS failure or a broken transfer (after retries)",
    DownloadReason.SSL_ERROR: "TLS handshake or certificate failure (not retried)",
    DownloadReason.BAD_RESPONSE: "the server's reply was not valid HTTP (not retried)",
    DownloadReason.NOAI: "X-Robots-Tag forbids AI use (noai / noimageai) and honour_noai is set",
    DownloadReason.BODY_TOO_LARGE: "Content-Length or the streamed body exceeded max_body_bytes",
    DownloadReason.INTERNAL_ERROR: "a bug in the downloader; logged with its traceback",
}

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: 5xx statuses that describe the request, not a transient state: never retried.
PERMANENT_5XX = frozenset({501, 505})
# Ask only for formats check_image accepts (content-negotiating CDNs would send AVIF otherwise).
ACCEPT = "image/jpeg,image/png,image/webp,image/gif,image/bmp;q=0.9,image/*;q=0.5,*/*;q=0.1"
DEFAULT_USER_AGENT = "facescale/0.1 (face-dataset research crawler; honours X-Robots-Tag noai)"
CLOSE_TIMEOUT_S = 30.0
_ROBOTS_TOKEN = re.compile(r"[\s,:]+")


def _cpus() -> int:
    """CPUs this process may run on, at most 8 (the default number of decode threads)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    return max(1, min(8, count))


@dataclass(frozen=True)
class DownloadLimits:
    """How hard, how long and how much the downloader fetches.

    Args:
        concurrency: requests in flight at once over all hosts; a request holds its slot
            until its body is verified, so this also bounds the bodies held in memory.
        per_host: requests in flight at once to one host name (any port).
        timeout_s: total time of one attempt: connect, headers, every redirect hop and body.
        connect_timeout_s: time to open one TCP (and TLS) connection.
        retries: further attempts after the first for connection errors, timeouts, 429, 5xx.
        backoff_s: base of the exponential backoff: ``backoff_s * 2**n`` (at most
            ``max_backoff_s``) plus up to ``backoff_s`` of random jitter.
        max_body_bytes: larger bodies are refused (from Content-Length, else while streaming).
        max_pixels, min_side: passed to check_image.
        honour_noai: refuse responses whose X-Robots-Tag says noai / noimageai.
        user_agent: the User-Agent header.
        max_redirects: redirects followed per attempt.
        max_retry_after_s: a server's Retry-After is honoured up to this many seconds.
        max_backoff_s: cap of one backoff wait.
        decode_workers: threads that verify (check_image + sha256) bodies larger than
            ``inline_decode_bytes``, so big decodes neither stall the event loop nor queue
            behind each other (Pillow decodes without the GIL); default: the usable CPUs, at
            most 8; 0 verifies everything on the loop.
        inline_decode_bytes: bodies up to this size are verified on the event loop: a small
            decode (about 0.3 ms for a 250x250 JPEG) costs less than the hop to a thread.
    """

    concurrency: int = 16
    per_host: int = 4
    timeout_s: float = 20.0
    connect_timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.5
    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 48
    honour_noai: bool = True
    user_agent: str = DEFAULT_USER_AGENT
    max_redirects: int = 5
    max_retry_after_s: float = 10.0
    max_backoff_s: float = 30.0
    decode_workers: int = field(default_factory=_cpus)
    inline_decode_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        for name in ("concurrency", "per_host", "max_body_bytes", "max_pixels", "min_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"DownloadLimits.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("timeout_s", "connect_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DownloadLimits.{name} must be > 0, got {getattr(self, name)!r}")
        for name in (
            "retries",
            "backoff_s",
            "max_redirects",
            "max_retry_after_s",
            "max_backoff_s",
            "decode_workers",
            "inline_decode_bytes",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"DownloadLimits.{name} must be >= 0, got {getattr(self, name)!r}")

    @classmethod
    def from_settings(cls, scraper: Any, **overrides: Any) -> DownloadLimits:
        """Limits from a ``ScraperSettings`` section (duck-typed), with keyword overrides."""
        timeout_s = float(scraper.timeout_s)
        values: dict[str, Any] = {
            "concurrency": scraper.download_concurrency,
            "per_host": scraper.per_host_concurrency,
            "timeout_s": timeout_s,
            "connect_timeout_s": min(10.0, timeout_s),
            "retries": scraper.retries,
            "max_body_bytes": scraper.max_body_bytes,
            "max_pixels": scraper.max_pixels,
            "min_side": scraper.min_side,
            "honour_noai": scraper.honour_noai,
        }
        for name in ("user_agent", "max_redirects", "connect_timeout_s", "backoff_s"):
            value = getattr(scraper, name, None)
            if value is not None:
                values[name] = value
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class FetchResult:
    """What happened to one URL: an accepted image (``error is None``) or a reason code."""

    url: str
    http_status: int | None = None  # final HTTP status; None when no response came
    content_type: str | None = None  # sniffed from the bytes, never the header
    data: bytes | None = None  # the body, only for accepted images
    image_id: str | None = None  # sha256 hex of the body whenever a whole body was received
    width: int | None = None
    height: int | None = None
    error: str | None = None
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    attempts: int = 0  # HTTP attempts made (0 for invalid_url)

    @property
    def ok(self) -> bool:
        return self.error is None


class _Outcome(NamedTuple):
    """One attempt's result: a network failure, or a received body and its verification."""

    error: str | None
    status: int | None = None
    body: bytes | None = None
    retryable: bool = False
    retry_after: float | None = None
    image_id: str | None = None  # set with ``check`` once a received body was verified
    check: ImageCheck | None = None


class _Redirect(NamedTuple):
    """A redirect response: its status and the absolute target."""

    status: int
    target: URL


_TIMEOUT = _Outcome(DownloadReason.TIMEOUT, retryable=True)


def _retryable(outcome: _Outcome) -> bool:
    return outcome.retryable


def _last_outcome(state: RetryCallState) -> _Outcome:
    assert state.outcome is not None
    return state.outcome.result()


class _BackoffOrRetryAfter(wait_base):
    """Exponential backoff with jitter, unless the server named a (capped) Retry-After."""

    def __init__(self, limits: DownloadLimits) -> None:
        # backoff_s * 2**(n-1), at most max_backoff_s, plus up to backoff_s of jitter
        exponential = wait_exponential(multiplier=limits.backoff_s, max=limits.max_backoff_s)
        self._backoff = exponential + wait_random(0, limits.backoff_s)
        self._cap = limits.max_retry_after_s

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        if outcome is not None and not outcome.failed:
            retry_after = outcome.result().retry_after
            if retry_after is not None:
                return min(retry_after, self._cap)
        return float(self._backoff(retry_state))


class _Host:
    __slots__ = ("slots", "users")

    def __init__(self, per_host: int) -> None:
        self.slots = asyncio.Semaphore(per_host)
        self.users = 0


def parse_url(url: object) -> URL | None:
    """``url`` as an absolute http(s) URL with a host, else None."""
    if not isinstance(url, str) or not url:
        return None
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return None
    return parsed


def forbids_ai(values: Iterable[str]) -> bool:
    """Whether X-Robots-Tag values carry ``noai`` or ``noimageai``, for any user agent.

    Directives are comma-separated and may follow a user-agent name (``googlebot: noai``).
    """
    for value in values:
        tokens = _ROBOTS_TOKEN.split(value.lower())
        if "noai" in tokens or "noimageai" in tokens:
            return True
    return False


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _verify(body: bytes, max_pixels: int, min_side: int) -> tuple[str, ImageCheck]:
    """sha256 and check_image of one body (runs on a decode thread or on the loop)."""
    return hashlib.sha256(body).hexdigest(), check_image(body, max_pixels=max_pixels, min_side=min_side)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # optional: a faster event loop when installed
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Downloader:
    """Concurrent, polite, verifying image downloader (see the module docstring).

    Use it as a context manager: ``with`` runs the event loop in a background thread (for
    threaded callers: :meth:`submit`, :meth:`fetch_all`); ``async with`` uses the running loop
    (:meth:`fetch`, :meth:`fetch_many`). Leaving either cancels outstanding work.

    Each request holds a per-host slot and a global slot from its first byte sent until its
    body is verified; backoff waits hold none. Bodies up to ``inline_decode_bytes`` are
    verified on the event loop (for 250x250 JPEGs on 2 cores that took ~25% less CPU per
    image than a hop to a thread); larger ones on ``decode_workers`` threads, which keeps
    the loop responsive and decodes several big images at once.
    """

    def __init__(self, limits: DownloadLimits | None = None) -> None:
        self.limits = limits or DownloadLimits()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: aiohttp.ClientSession | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._global: asyncio.Semaphore | None = None
        self._hosts: dict[str, _Host] = {}
        self._batches: set[asyncio.Task[Any]] = set()
        self._wait = _BackoffOrRetryAfter(self.limits)
        self._state_lock = threading.Lock()
        self._closed = False

    # ----- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Downloader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Downloader:
        with self._state_lock:
            if self._loop is not None or self._closed:
                raise RuntimeError("a Downloader can be started only once")
            self._loop = asyncio.get_running_loop()
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._aclose()

    def start(self) -> None:
        """Start the event loop thread (what ``with Downloader(...)`` does)."""
        with self._state_lock:
            if self._loop is not None or self._closed:
                raise RuntimeError("a Downloader can be started only once")
            loop = self._loop = _new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(loop, ready), name="facescale-downloader", daemon=True)
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            raise

    def _run(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except BaseException as exc:
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _open(self) -> None:
        limits = self.limits
        self._global = asyncio.Semaphore(limits.concurrency)
        if limits.decode_workers:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=limits.decode_workers, thread_name_prefix="facescale-decode"
            )
        connector = aiohttp.TCPConnector(limit=limits.concurrency, limit_per_host=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=limits.connect_timeout_s),
            headers={"User-Agent": limits.user_agent, "Accept": ACCEPT},
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )

    def close(self) -> None:
        """Cancel outstanding work, close the session and stop the loop thread (idempotent)."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        loop, thread = self._loop, self._thread
        if thread is None or loop is None:
            return  # never started, or started with ``async with`` (closed by __aexit__)
        if threading.current_thread() is thread:
            raise RuntimeError("Downloader.close() called from its own event loop thread")
        try:
            asyncio.run_coroutine_threadsafe(self._aclose(), loop).result(CLOSE_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            log.warning("the downloader did not close within %.0f s; stopping its loop anyway", CLOSE_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

    async def _aclose(self) -> None:
        self._closed = True
        batches = list(self._batches)
        for task in batches:
            task.cancel()
        if batches:
            await asyncio.gather(*batches, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._executor is not None:
            await asyncio.to_thread(partial(self._executor.shutdown, wait=True, cancel_futures=True))
        if batches:
            log.debug("downloader closed with %d batches cancelled", len(batches))

    # ----- synchronous facade (any thread but the loop's) ------------------------------

    def submit(self, urls: Iterable[str]) -> concurrent.futures.Future[list[FetchResult]]:
        """Start fetching ``urls``; the future gives one result per URL, in input order.

        Cancelling the future cancels the batch; closing the downloader cancels it too.
        """
        urls = list(urls)
        if threading.current_thread() is self._thread:
            raise RuntimeError("submit() from the downloader's own event loop; await fetch_many() there")
        with self._state_lock:  # close() cannot slip in between the check and the scheduling
            loop = self._loop
            if loop is None or self._closed:
                raise RuntimeError("the Downloader is not running (use it as a context manager)")
            return asyncio.run_coroutine_threadsafe(self.fetch_many(urls), loop)

    def fetch_all(self, urls: Iterable[str], timeout: float | None = None) -> list[FetchResult]:
        """Fetch ``urls`` and wait for all results (input order)."""
        return self.submit(urls).result(timeout)

    # ----- asyncio API (on the downloader's loop) --------------------------------------

    async def fetch_many(self, urls: Sequence[str]) -> list[FetchResult]:
        """Fetch ``urls`` concurrently; one result per URL, in input order."""
        task = asyncio.current_task()
        assert task is not None
        self._batches.add(task)
        try:
            results = list(await asyncio.gather(*(self.fetch(url) for url in urls)))
        finally:
            self._batches.discard(task)
        if log.isEnabledFor(logging.DEBUG):
            reasons = Counter(r.error for r in results if r.error)
            log.debug(
                "fetched %d URLs: %d accepted, rejected %s", len(results), len(results) - reasons.total(), dict(reasons)
            )
        return results

    async def fetch(self, url: str) -> FetchResult:
        """Fetch and verify one URL; never raises for a bad URL or a bad server."""
        if self._session is None or self._closed:
            raise RuntimeError("the Downloader is not running")
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("Downloader.fetch() must run on the downloader's event loop")
        parsed = parse_url(url)
        if parsed is None:
            return FetchResult(url=str(url), error=DownloadReason.INVALID_URL)
        attempts = 1
        try:
            outcome = await self._attempt(parsed)
            if outcome.retryable and self.limits.retries:
                # Only failures pay for tenacity: it replays the first outcome, then waits
                # (backoff with jitter, or Retry-After) and retries.
                replay = [outcome]

                async def attempt() -> _Outcome:
                    nonlocal attempts
                    if replay:
                        return replay.pop()
                    attempts += 1
                    return await self._attempt(parsed)

                retrying = AsyncRetrying(
                    stop=stop_after_attempt(self.limits.retries + 1),
                    wait=self._wait,
                    retry=retry_if_result(_retryable),
                    retry_error_callback=_last_outcome,
                    before_sleep=partial(_log_retry, url),
                )
                outcome = await retrying(attempt)
            check = outcome.check
            if check is None:
                return FetchResult(url=url, http_status=outcome.status, error=outcome.error, attempts=attempts)
            return FetchResult(
                url=url,
                http_status=outcome.status,
                content_type=check.content_type,
                data=outcome.body if check.ok else None,
                image_id=outcome.image_id,
                width=check.width,
                height=check.height,
                error=check.error,
                attempts=attempts,
            )
        except Exception:
            log.exception("downloader bug while fetching %s", url)
            return FetchResult(url=url, error=DownloadReason.INTERNAL_ERROR, attempts=attempts)

    async def _attempt(self, url: URL) -> _Outcome:
        """One attempt: follow redirects (each hop under its host's limit) within timeout_s."""
        assert self._global is not None
        loop = asyncio.get_running_loop()
        budget = self.limits.timeout_s
        seen: set[URL] = set()
        status: int | None = None
        for _ in range(self.limits.max_redirects + 1):
            seen.add(url)
            host_name = url.host or ""
            host = self._hosts.get(host_name)
            if host is None:
                host = self._hosts[host_name] = _Host(self.limits.per_host)
            host.users += 1
            try:
                async with host.slots, self._global:
                    started = loop.time()
                    try:
                        async with asyncio.timeout(budget):
                            outcome = await self._request(url)
                    except TimeoutError:
                        return _TIMEOUT
                    budget -= loop.time() - started
                    if isinstance(outcome, _Outcome) and outcome.body is not None:
                        # Verify while still holding the slots: bodies in memory stay bounded
                        # by the concurrency, and a slow decode slows the fetching down.
                        return await self._verify(outcome)
            finally:
                host.users -= 1
                if not host.users:
                    del self._hosts[host_name]
            if not isinstance(outcome, _Redirect):
                return outcome
            status, url = outcome
            if url in seen:  # a loop: no need to go round it max_redirects times
                break
        return _Outcome(DownloadReason.TOO_MANY_REDIRECTS, status)

    async def _verify(self, outcome: _Outcome) -> _Outcome:
        """Hash and check a received body: small ones on the loop, big ones on a decode thread."""
        assert outcome.body is not None
        limits = self.limits
        if self._executor is None or len(outcome.body) <= limits.inline_decode_bytes:
            image_id, check = _verify(outcome.body, limits.max_pixels, limits.min_side)
        else:
            loop = asyncio.get_running_loop()
            image_id, check = await loop.run_in_executor(
                self._executor, _verify, outcome.body, limits.max_pixels, limits.min_side
            )
        return outcome._replace(image_id=image_id, check=check)

    async def _request(self, url: URL) -> _Outcome | _Redirect:
        """One HTTP exchange: a redirect target, or the final outcome (body read if wanted)."""
        assert self._session is not None
        limits = self.limits
        try:
            async with self._session.get(url, allow_redirects=False) as resp:
                status = resp.status
                if status in REDIRECT_STATUSES and "Location" in resp.headers:
                    try:
                        target = url.join(URL(resp.headers["Location"]))
                    except (ValueError, TypeError):
                        return _Outcome(DownloadReason.BAD_REDIRECT, status)
                    if target.scheme not in ("http", "https") or not target.host:
                        return _Outcome(DownloadReason.BAD_REDIRECT, status)
                    return _Redirect(status, target)
                if not 200 <= status < 300:
                    retry = status == 429 or (500 <= status < 600 and status not in PERMANENT_5XX)
                    after = parse_retry_after(resp.headers.get("Retry-After")) if retry else None
                    return _Outcome(f"http_{status}", status, retryable=retry, retry_after=after)
                if limits.honour_noai and forbids_ai(resp.headers.getall("X-Robots-Tag", ())):
                    return _Outcome(DownloadReason.NOAI, status)
                length = resp.content_length
                if length is not None and length > limits.max_body_bytes:
                    return _Outcome(DownloadReason.BODY_TOO_LARGE, status)
                encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
                body: bytes | None
                if length is not None and encoding in ("", "identity"):
                    body = await resp.read()  # exactly Content-Length bytes, already bounded
                else:
                    body = await _read_capped(resp.content, limits.max_body_bytes)
                    if body is None:
                        return _Outcome(DownloadReason.BODY_TOO_LARGE, status)
                return _Outcome(None, status, body)
        except TimeoutError:  # aiohttp's own (socket connect) timeout
            return _TIMEOUT
        except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError):
            return _Outcome(DownloadReason.SSL_ERROR)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError):
            return _Outcome(DownloadReason.CONNECTION_ERROR, retryable=True)
        except aiohttp.ClientResponseError as exc:  # unparseable status line or headers
            return _Outcome(DownloadReason.BAD_RESPONSE, exc.status or None)
        except aiohttp.ClientError:
            return _Outcome(DownloadReason.CONNECTION_ERROR, retryable=True)


async def _read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes | None:
    """The whole stream, or None as soon as it exceeds ``limit`` bytes (stops endless bodies)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _log_retry(url: str, state: RetryCallState) -> None:
    outcome = state.outcome.result() if state.outcome is not None and not state.outcome.failed else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.debug(
        "retrying %s after %s (attempt %d, waiting %.2fs)", url, outcome and outcome.error, state.attempt_number, wait
    )


__all__ = [
    "REASONS",
    "DownloadLimits",
    "DownloadReason",
    "Downloader",
    "FetchResult",
    "forbids_ai",
    "parse_retry_after",
    "parse_url",
]
