"""Downloader: real HTTP against a local aiohttp server, one test per behaviour and reason code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import gzip
import hashlib
import io
import socket
import struct
import threading
import time
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from facescale.scraper.downloader import (
    Downloader,
    DownloadLimits,
    FetchResult,
    forbids_ai,
    parse_retry_after,
    parse_url,
)

from ..helpers import free_port

PEOPLE = ("Aaron_Sorkin", "Abdullah_Gul", "Adam_Sandler", "Al_Gore", "Alec_Baldwin", "Alan_Greenspan")


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="TIFF")
    return buf.getvalue()


class ImageServer:
    """An aiohttp app on 127.0.0.1 (reachable as 127.0.0.1 and localhost) in its own thread.

    It counts requests per key, records when they came, and tracks the peak number of
    simultaneous requests per (group, host) and per group.
    """

    def __init__(self, photos: Path) -> None:
        self.photos = photos
        self.hits: Counter[str] = Counter()
        self.hit_times: defaultdict[str, list[float]] = defaultdict(list)
        self.active: Counter[tuple[str, str]] = Counter()
        self.peak: Counter[tuple[str, str]] = Counter()
        self.resets = 0
        self._cache: dict[str, bytes] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-image-server", daemon=True)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        reset_sock = socket.socket()
        reset_sock.bind(("127.0.0.1", 0))
        self.reset_port = reset_sock.getsockname()[1]
        self._thread.start()
        self._runner = self._call(self._start(sock, reset_sock))

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def photo(self, person: str, index: int = 0) -> tuple[str, bytes]:
        """The path and bytes of one real LFW photo."""
        file = sorted((self.photos / person).glob("*.jpg"))[index]
        return f"/photo/{person}/{file.name}", file.read_bytes()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self, sock: socket.socket, reset_sock: socket.socket) -> web.AppRunner:
        app = web.Application()
        get = app.router.add_get
        get("/photo/{person}/{file}", self._photo)
        get("/blob/{kind}", self._blob)
        get("/slow-headers/{key}", self._slow_headers)
        get("/slow-body", self._slow_body)
        get("/endless", self._endless)
        get("/huge-length", self._huge_length)
        get("/gzip-bomb", self._gzip_bomb)
        get("/gzip-photo", self._gzip_photo)
        get("/redirect/{n}", self._redirect)
        get("/loop/{key}/{side}", self._loop_redirect)
        get("/redirect-to", self._redirect_to)
        get("/flaky/{key}", self._flaky)
        get("/status/{code}/{key}", self._status)
        get("/retry-after/{key}", self._retry_after)
        get("/noai", self._noai)
        get("/noai-endless", self._noai_endless)
        get("/hold/{group}", self._hold)
        # handler_cancellation: a handler whose client went away stops (slow/endless ones).
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._reset_server = await asyncio.start_server(self._reset, sock=reset_sock)
        return runner

    def close(self) -> None:
        async def stop() -> None:
            self._reset_server.close()
            await self._runner.cleanup()

        self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _count(self, key: str) -> int:
        self.hits[key] += 1
        self.hit_times[key].append(time.monotonic())
        return self.hits[key]

    def _lfw(self, person: str, file: str) -> bytes:
        key = f"{person}/{file}"
        if key not in self._cache:
            self._cache[key] = (self.photos / person / file).read_bytes()
        return self._cache[key]

    def _default_photo(self) -> bytes:
        return self._lfw(PEOPLE[0], f"{PEOPLE[0]}_0001.jpg")

    async def _photo(self, request: web.Request) -> web.Response:
        body = self._lfw(request.match_info["person"], request.match_info["file"])
        return web.Response(body=body, content_type=request.query.get("ct", "image/jpeg"))

    async def _blob(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        bodies = {
            "html": b"<!doctype html><html><body>not an image</body></html>",
            "empty": b"",
            "tiff": _tiff(),
            "tiny": _png((16, 16)),
            "bomb-header": _png_header_only(9000, 9000),
            "truncated": self._default_photo()[:3000],
            "png": _png((64, 48)),
        }
        return web.Response(body=bodies[kind], content_type="image/jpeg")

    async def _slow_headers(self, request: web.Request) -> web.Response:
        self._count("slow-headers/" + request.match_info["key"])
        await asyncio.sleep(float(request.query.get("s", "10")))
        return web.Response(body=self._default_photo(), content_type="image/jpeg")

    async def _slow_body(self, request: web.Request) -> web.StreamResponse:
        body = self._default_photo()
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = len(body)
        await resp.prepare(request)
        for i in range(0, len(body), 100):  # 100 bytes every 0.1 s: ~9 s for the photo
            await resp.write(body[i : i + 100])
            await asyncio.sleep(0.1)
        return resp

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"\xff" * 65536
        while True:
            await resp.write(chunk)

    async def _huge_length(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.content_length = 10**10
        await resp.prepare(request)
        await resp.write(self._default_photo()[:1024])
        await asyncio.sleep(30)
        return resp

    async def _gzip_bomb(self, request: web.Request) -> web.Response:
        body = gzip.compress(b"\0" * (4 * 1024 * 1024))  # 4 KiB that inflate to 4 MiB
        return web.Response(body=body, headers={"Content-Type": "image/jpeg", "Content-Encoding": "gzip"})

    async def _gzip_photo(self, request: web.Request) -> web.Response:
        body = gzip.compress(self._default_photo())
        return web.Response(body=body, headers={"Content-Type": "image/jpeg", "Content-Encoding": "gzip"})

    async def _redirect(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(body=self._default_photo(), content_type="image/jpeg")
        raise web.HTTPFound(f"/redirect/{n - 1}")  # a relative Location

    async def _loop_redirect(self, request: web.Request) -> web.Response:
        key, side = request.match_info["key"], request.match_info["side"]
        self._count("loop/" + key)
        raise web.HTTPFound(f"/loop/{key}/{'b' if side == 'a' else 'a'}")

    async def _redirect_to(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def _flaky(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if self._count("flaky/" + key) <= int(request.query["fail"]):
            return web.Response(status=int(request.query.get("status", "503")), text="try again")
        return web.Response(body=self._default_photo(), content_type="image/jpeg")

    async def _status(self, request: web.Request) -> web.Response:
        self._count("status/" + request.match_info["key"])
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def _retry_after(self, request: web.Request) -> web.Response:
        if self._count("retry-after/" + request.match_info["key"]) == 1:
            return web.Response(status=429, headers={"Retry-After": request.query["after"]}, text="slow down")
        return web.Response(body=self._default_photo(), content_type="image/jpeg")

    async def _noai(self, request: web.Request) -> web.Response:
        headers = [("X-Robots-Tag", tag) for tag in request.query.getall("tag", [])]
        return web.Response(body=self._default_photo(), content_type="image/jpeg", headers=headers)

    async def _noai_endless(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg", "X-Robots-Tag": "noai"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        while True:
            await resp.write(b"\xff" * 65536)
            await asyncio.sleep(0.01)

    async def _hold(self, request: web.Request) -> web.Response:
        group = request.match_info["group"]
        host = request.host.rsplit(":", 1)[0]
        for key in ((group, host), (group, "*")):
            self.active[key] += 1
            self.peak[key] = max(self.peak[key], self.active[key])
        try:
            await asyncio.sleep(float(request.query.get("s", "0.1")))
        finally:
            for key in ((group, host), (group, "*")):
                self.active[key] -= 1
        return web.Response(body=self._default_photo(), content_type="image/jpeg")

    async def _reset(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.resets += 1
        writer.transport.abort()  # RST without a response


@pytest.fixture(scope="module")
def server(lfw_dev: Path) -> Iterator[ImageServer]:
    srv = ImageServer(lfw_dev)
    yield srv
    srv.close()


# Short timeouts and no real backoff, so the whole file stays fast.
FAST = {"timeout_s": 5.0, "connect_timeout_s": 2.0, "retries": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}


def fetch(urls: list[str], **limits: Any) -> list[FetchResult]:
    with Downloader(DownloadLimits(**{**FAST, **limits})) as dl:
        return dl.fetch_all(urls, timeout=60)


def fetch_one(url: str, **limits: Any) -> FetchResult:
    (result,) = fetch([url], **limits)
    return result



# ----- accepted images ----------------------------------------------------------------------


def test_real_photo_comes_back_byte_identical(server: ImageServer) -> None:
    path, body = server.photo("Aaron_Sorkin")
    before = datetime.now(UTC)
    result = fetch_one(server.url(path))
    assert result.ok and result.error is None
    assert result.data == body
    assert result.image_id == hashlib.sha256(body).hexdigest()
    assert (result.http_status, result.content_type, result.width, result.height) == (200, "image/jpeg", 250, 250)
    assert result.attempts == 1 and result.url == server.url(path)
    assert result.fetched_at.tzinfo is not None and before <= result.fetched_at <= datetime.now(UTC)


def test_content_type_header_is_not_trusted(server: ImageServer) -> None:
    path, body = server.photo("Al_Gore")
    wrong = fetch_one(server.url(path + "?ct=text/html"))
    assert wrong.ok and wrong.content_type == "image/jpeg" and wrong.data == body
    png = fetch_one(server.url("/blob/png"))  # a PNG served as image/jpeg
    assert png.ok and png.content_type == "image/png" and (png.width, png.height) == (64, 48)


def test_gzip_encoded_body_is_decoded(server: ImageServer) -> None:
    _, body = server.photo(PEOPLE[0])
    result = fetch_one(server.url("/gzip-photo"))
    assert result.ok and result.data == body


def test_async_api_in_a_running_loop(server: ImageServer) -> None:
    path, body = server.photo("Adam_Sandler")

    async def main() -> list[FetchResult]:
        async with Downloader(DownloadLimits(**FAST)) as dl:
            one = await dl.fetch(server.url(path))
            return [one, *await dl.fetch_many([server.url("/blob/html"), server.url(path, "localhost")])]

    one, html, two = asyncio.run(main())
    assert one.ok and one.data == body and two.ok and two.data == body
    assert html.error == "not_an_image"


# ----- content reason codes (from check_image) ------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("html", "not_an_image"),  # HTML served as image/jpeg
        ("empty", "empty"),
        ("tiff", "unsupported_format"),
        ("bomb-header", "too_many_pixels"),
        ("tiny", "too_small"),
        ("truncated", "corrupt"),
    ],
)
def test_content_reasons(server: ImageServer, kind: str, reason: str) -> None:
    result = fetch_one(server.url(f"/blob/{kind}"))
    assert result.error == reason and result.data is None
    assert result.http_status == 200 and result.attempts == 1  # content errors are never retried
    assert result.image_id is not None and len(result.image_id) == 64  # a body was received


def test_big_bodies_are_verified_on_a_thread(server: ImageServer) -> None:
    path, body = server.photo("Alec_Baldwin")
    for workers in (0, 1):
        result = fetch_one(server.url(path), decode_workers=workers, inline_decode_bytes=0)
        assert result.ok and result.data == body


# ----- URL and transport reason codes ---------------------------------------------------------


def test_invalid_urls_make_no_request(server: ImageServer) -> None:
    bad = ["ftp://example.com/a.jpg", "not a url", "", "http://", "javascript:alert(1)", "/relative.jpg", "file:///x"]
    path, _ = server.photo(PEOPLE[1])
    results = fetch([*bad, server.url(path)])
    assert [r.url for r in results] == [*bad, server.url(path)]
    assert all(r.error == "invalid_url" and r.attempts == 0 and r.http_status is None for r in results[:-1])
    assert results[-1].ok


def test_connection_refused_is_retried_then_reported(server: ImageServer) -> None:
    result = fetch_one(f"http://127.0.0.1:{free_port()}/a.jpg", retries=1)
    assert result.error == "connection_error" and result.http_status is None and result.attempts == 2


def test_connection_reset_is_retried_then_reported(server: ImageServer) -> None:
    before = server.resets
    result = fetch_one(f"http://127.0.0.1:{server.reset_port}/a.jpg", retries=2)
    assert result.error == "connection_error" and result.attempts == 3
    # aiohttp itself re-sends an idempotent request once when a connection drops (RFC 9112).
    assert 3 <= server.resets - before <= 6


def test_slow_headers_time_out_and_timeouts_are_retried(server: ImageServer) -> None:
    start = time.monotonic()
    result = fetch_one(server.url("/slow-headers/a?s=10"), timeout_s=0.4, retries=1)
    assert result.error == "timeout" and result.http_status is None and result.attempts == 2
    assert server.hits["slow-headers/a"] == 2
    assert time.monotonic() - start < 3


def test_slow_body_times_out(server: ImageServer) -> None:
    start = time.monotonic()
    result = fetch_one(server.url("/slow-body"), timeout_s=0.5, retries=0)
    assert result.error == "timeout" and result.attempts == 1
    assert time.monotonic() - start < 3


def test_endless_stream_is_cut_at_max_body_bytes(server: ImageServer) -> None:
    start = time.monotonic()
    result = fetch_one(server.url("/endless"), max_body_bytes=256 * 1024, timeout_s=10)
    assert result.error == "body_too_large" and result.http_status == 200 and result.image_id is None
    assert result.attempts == 1 and time.monotonic() - start < 5


def test_large_content_length_is_refused_without_reading(server: ImageServer) -> None:
    start = time.monotonic()
    result = fetch_one(server.url("/huge-length"), timeout_s=10)  # the server then stalls for 30 s
    assert result.error == "body_too_large" and result.http_status == 200 and result.attempts == 1
    assert time.monotonic() - start < 3


def test_decompression_is_capped_too(server: ImageServer) -> None:
    result = fetch_one(server.url("/gzip-bomb"), max_body_bytes=1024 * 1024)
    assert result.error == "body_too_large"


# ----- redirects ------------------------------------------------------------------------------


def test_redirects_are_followed_up_to_the_limit(server: ImageServer) -> None:
    ok, too_many = fetch([server.url("/redirect/3"), server.url("/redirect/7")], max_redirects=5)
    assert ok.ok and ok.http_status == 200 and ok.url == server.url("/redirect/3")
    assert too_many.error == "too_many_redirects" and too_many.http_status == 302


def test_redirect_loop(server: ImageServer) -> None:
    result = fetch_one(server.url("/loop/x/a"), max_redirects=20)
    assert result.error == "too_many_redirects" and result.attempts == 1
    assert server.hits["loop/x"] == 2  # the loop is seen on its first turn, not after 20 hops


def test_redirect_across_hosts_and_to_bad_targets(server: ImageServer) -> None:
    path, body = server.photo(PEOPLE[2])
    cross = server.url("/redirect-to?to=" + server.url(path, "localhost"))
    ftp = server.url("/redirect-to?to=ftp://example.com/a.jpg")
    ok, bad = fetch([cross, ftp])
    assert ok.ok and ok.data == body
    assert bad.error == "bad_redirect" and bad.http_status == 302


# ----- HTTP errors and retries ----------------------------------------------------------------


def test_503_then_200_is_retried(server: ImageServer) -> None:
    result = fetch_one(server.url("/flaky/a?fail=2"), retries=3)
    assert result.ok and result.attempts == 3 and server.hits["flaky/a"] == 3


def test_retries_run_out(server: ImageServer) -> None:
    result = fetch_one(server.url("/flaky/b?fail=10&status=500"), retries=2)
    assert result.error == "http_500" and result.http_status == 500 and result.attempts == 3
    assert server.hits["flaky/b"] == 3


def test_429_is_retried(server: ImageServer) -> None:
    result = fetch_one(server.url("/flaky/c?fail=1&status=429"), retries=1)
    assert result.ok and result.attempts == 2


@pytest.mark.parametrize("code", [404, 403, 410, 501])
def test_client_errors_are_not_retried(server: ImageServer, code: int) -> None:
    result = fetch_one(server.url(f"/status/{code}/k{code}"), retries=3)
    assert result.error == f"http_{code}" and result.http_status == code and result.attempts == 1
    assert result.data is None and result.image_id is None
    assert server.hits[f"status/k{code}"] == 1


def test_retry_after_is_honoured(server: ImageServer) -> None:
    result = fetch_one(server.url("/retry-after/a?after=1"), retries=2, backoff_s=0, max_retry_after_s=5)
    assert result.ok and result.attempts == 2
    first, second = server.hit_times["retry-after/a"]
    assert second - first >= 0.9


def test_retry_after_is_capped(server: ImageServer) -> None:
    start = time.monotonic()
    result = fetch_one(server.url("/retry-after/b?after=3600"), retries=2, max_retry_after_s=0.2)
    assert result.ok and result.attempts == 2 and time.monotonic() - start < 3


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = parse_retry_after(format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True))
    assert later is not None and 25 <= later <= 31
    assert parse_retry_after(format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)) == 0.0


# ----- X-Robots-Tag ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        (["noai"], "noai"),
        (["noimageai"], "noai"),
        (["NoAI"], "noai"),
        (["googlebot: noai"], "noai"),
        (["noindex, noimageai"], "noai"),
        (["noindex", "otherbot: noindex, noai"], "noai"),
        (["noindex, nofollow"], None),
        (["max-image-preview: large"], None),
        ([], None),
    ],
)
def test_noai_variants(server: ImageServer, tags: list[str], reason: str | None) -> None:
    query = "&".join(f"tag={t}" for t in tags)
    result = fetch_one(server.url(f"/noai?{query}"))
    assert result.error == reason
    if reason:
        assert result.http_status == 200 and result.data is None and result.image_id is None


def test_noai_can_be_ignored(server: ImageServer) -> None:
    assert fetch_one(server.url("/noai?tag=noai"), honour_noai=False).ok


def test_noai_is_checked_before_the_body_is_read(server: ImageServer) -> None:
    start = time.monotonic()
    result = fetch_one(server.url("/noai-endless"), timeout_s=10)
    assert result.error == "noai" and time.monotonic() - start < 3


def test_forbids_ai() -> None:
    assert forbids_ai(["googlebot: noindex", "bingbot: noimageai"])
    assert not forbids_ai(["noindex", "nofollow, noarchive"])
    assert not forbids_ai([])


def test_parse_url() -> None:
    assert parse_url("https://example.com/a b.jpg") is not None
    assert parse_url("HTTP://Example.com/x") is not None
    assert parse_url("mailto:a@b.c") is None and parse_url(None) is None


# ----- concurrency, order, volume ------------------------------------------------------------


def test_per_host_concurrency_is_respected(server: ImageServer) -> None:
    urls = [server.url(f"/hold/ph?i={i}", host) for i in range(12) for host in ("127.0.0.1", "localhost")]
    results = fetch(urls, concurrency=10, per_host=2)
    assert all(r.ok for r in results)
    assert server.peak[("ph", "127.0.0.1")] == 2 and server.peak[("ph", "localhost")] == 2
    assert server.peak[("ph", "*")] == 4  # both hosts were served at the same time


def test_global_concurrency_is_respected(server: ImageServer) -> None:
    urls = [server.url(f"/hold/gl?i={i}", host) for i in range(9) for host in ("127.0.0.1", "localhost")]
    results = fetch(urls, concurrency=3, per_host=3)
    assert all(r.ok for r in results)
    assert server.peak[("gl", "*")] == 3


def test_many_urls_complete_in_input_order(server: ImageServer) -> None:
    photos = [server.photo(person, i) for person in PEOPLE for i in range(2)]
    urls, expected = [], []
    for i in range(300):
        path, body = photos[i % len(photos)]
        urls.append(server.url(f"{path}?i={i}", ("127.0.0.1", "localhost")[i % 2]))
        expected.append(hashlib.sha256(body).hexdigest())
    results = fetch(urls, concurrency=32, per_host=16)
    assert [r.url for r in results] == urls
    assert [r.image_id for r in results] == expected
    assert all(r.ok and r.attempts == 1 for r in results)


def test_submit_is_thread_safe(server: ImageServer) -> None:
    path, body = server.photo(PEOPLE[3])
    with Downloader(DownloadLimits(**FAST)) as dl, concurrent.futures.ThreadPoolExecutor(4) as pool:
        batches = list(
            pool.map(lambda i: dl.fetch_all([server.url(f"{path}?t={i}&j={j}") for j in range(5)]), range(8))
        )
    assert all(r.ok and r.data == body for batch in batches for r in batch)


# ----- lifecycle ------------------------------------------------------------------------------


def test_close_with_work_in_flight_does_not_hang(server: ImageServer, caplog: pytest.LogCaptureFixture) -> None:
    threads_before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dl = Downloader(DownloadLimits(**{**FAST, "timeout_s": 60}))
        dl.start()
        future = dl.submit([server.url(f"/slow-headers/close{i}?s=30") for i in range(6)])
        deadline = time.monotonic() + 5
        while sum(server.hits[f"slow-headers/close{i}"] for i in range(6)) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        start = time.monotonic()
        dl.close()
        assert time.monotonic() - start < 3
        assert future.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=1)
        with pytest.raises(RuntimeError):
            dl.submit([server.url("/blob/png")])
        dl.close()  # idempotent
        del dl, future
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]
    leaked = [t for t in set(threading.enumerate()) - threads_before if t.name.startswith("facescale")]
    assert not leaked


def test_cancelling_a_batch_leaves_the_downloader_usable(server: ImageServer) -> None:
    path, _ = server.photo(PEOPLE[4])
    with Downloader(DownloadLimits(**{**FAST, "timeout_s": 60})) as dl:
        slow = dl.submit([server.url("/slow-headers/cancel?s=30")])
        time.sleep(0.2)
        slow.cancel()
        assert dl.fetch_all([server.url(path)])[0].ok


def test_limits_from_settings() -> None:
    from facescale.config import ScraperSettings

    settings = ScraperSettings(download_concurrency=8, per_host_concurrency=2, timeout_s=3, retries=1)
    limits = DownloadLimits.from_settings(settings, backoff_s=0.1)
    assert (limits.concurrency, limits.per_host, limits.timeout_s, limits.retries) == (8, 2, 3.0, 1)
    assert limits.connect_timeout_s == 3.0 and limits.backoff_s == 0.1
    assert (limits.max_body_bytes, limits.max_pixels, limits.min_side) == (
        settings.max_body_bytes,
        settings.max_pixels,
        settings.min_side,
    )
    with pytest.raises(ValueError):
        DownloadLimits(concurrency=0)
