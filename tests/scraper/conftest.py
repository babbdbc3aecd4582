"""A local image-search site for the engine and browser tests, in the demo and Bing page shapes.

One aiohttp server on 127.0.0.1 (in a background thread, shared by the session) serves the
pages of the demo web's shapes (`facescale.demoweb.shapes`: the demo's ``/search`` and
``/api/results``, Bing's ``/images/search``, ``/images/async`` and ``/consent``) over a
catalogue of its own, with the faults a test injects: a keyword in ``stall`` gets a tracker
script that never arrives (the Bing page never finishes loading), one in ``no_end`` a demo
page that never shows ``#fs-end``, one in ``delays``/``hang`` a search page late or never,
and "Lookaside Person" has crawler-only image URLs (an HTML page, a 403, no answer at all).

Every name in `CATALOGUE` has that many results; result 3 is unreadable (no ``data-full`` /
broken ``m`` JSON), result 5 repeats result 2's image, result 8 is a ``data:`` URL; even
results are relative URLs, odd ones absolute on another host. `SearchSite.expected` says
what an adapter must yield. Tests can delay or hang a keyword's search page and read the
log of search-page requests (time, keyword, the browser's TCP port).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin

import pytest
from aiohttp import web

from facescale.demoweb import shapes
from facescale.demoweb.shapes import Result

PAGE_SIZE = 10
CATALOGUE = {
    "Ada Lovelace": 23,
    "Alan Turing": 12,
    "Grace Hopper": 6,
    "Katherine Johnson": 14,
    "Slow Person": 4,
    "Hang Person": 4,
    "Lookaside Person": 6,
}
# Social networks' crawler endpoints: they serve no image to a normal client (an HTML page,
# a refusal, or nothing at all).
LOOKASIDE = {
    1: "/lookaside/crawler/media/?media_id=17841400001&get_thumbnail=1",  # 200 text/html
    3: "/lookaside/crawler/media/?media_id=17841400003",  # 403
    5: "/lookaside/crawler/hang/?media_id=17841400005",  # never answers
}
GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


@dataclass(frozen=True)
class Hit:
    """One search-page request as the server saw it."""

    at: float  # time.monotonic() when it arrived
    path: str
    keyword: str
    peer_port: int  # the browser's end of the TCP connection


@dataclass
class SearchSite:
    base_url: str = ""
    delays: dict[str, float] = field(default_factory=dict)  # keyword -> seconds before the page comes
    hang: set[str] = field(default_factory=set)  # keywords whose search page never comes
    no_end: set[str] = field(default_factory=set)  # keywords whose demo page never shows #fs-end
    stall: set[str] = field(default_factory=set)  # keywords whose Bing page loads a script that never comes
    # keywords whose Bing page starts with a parser-blocking script from another host that never answers
    third_party: set[str] = field(default_factory=set)
    tracker_url: str = ""  # that host: the same server on another loopback address
    ddg_challenge: set[str] = field(default_factory=set)  # keywords whose DuckDuckGo page is the bot check
    ddg_refused: set[str] = field(default_factory=set)  # keywords whose i.js answers 403
    ddg_shell: set[str] = field(default_factory=set)  # keywords whose DuckDuckGo page is a shell without a token
    # keyword -> what Google answers instead of results (shapes.GOOGLE_BLOCKS)
    google_blocks: dict[str, str] = field(default_factory=dict)
    google_basic: set[str] = field(default_factory=set)  # keywords Google answers with its basic-HTML page
    hits: list[Hit] = field(default_factory=list)
    api_calls: list[tuple[str, str, int]] = field(default_factory=list)  # (path, keyword, offset)
    consents: int = 0
    on_hit: list[Callable[[Hit], None]] = field(default_factory=list)  # called in the server thread

    def reset(self) -> None:
        self.delays.clear()
        self.hang.clear()
        self.no_end.clear()
        self.stall.clear()
        self.third_party.clear()
        self.ddg_challenge.clear()
        self.ddg_refused.clear()
        self.ddg_shell.clear()
        self.google_blocks.clear()
        self.google_basic.clear()
        self.hits.clear()
        self.api_calls.clear()
        self.on_hit.clear()
        self.consents = 0

    @staticmethod
    def results(keyword: str) -> list[Result]:
        slug = quote(keyword.lower().replace(" ", "-"))
        full: list[str | None] = [
            f"/img/{slug}/{i}.jpg" if i % 2 == 0 else f"http://cdn.example.test/{slug}/{i}.jpg"
            for i in range(CATALOGUE.get(keyword, 0))
        ]
        if len(full) > 3:
            full[3] = None  # unreadable
        if len(full) > 5:
            full[5] = full[2]  # a repeat
        if len(full) > 8:
            full[8] = "data:image/gif;base64,R0lGODlhAQABAAAAACw="  # not http(s)
        if keyword == "Lookaside Person":
            for i, path in LOOKASIDE.items():
                full[i] = path
        return [Result(i, url, f"/page/{slug}/{i}", f"/thumb/{slug}/{i}.gif") for i, url in enumerate(full)]

    def expected(self, keyword: str) -> list[tuple[str, str, int]]:
        """(absolute image URL, absolute page URL, rank) an adapter must yield, in order."""
        seen: set[str] = set()
        out = []
        for item in self.results(keyword):
            full = item.full
            if not full or full.startswith("data:"):
                continue
            url = urljoin(self.base_url + "/", full)
            if url in seen:
                continue
            seen.add(url)
            out.append((url, urljoin(self.base_url + "/", item.page), item.rank))
        return out

    # ------------------------------------------------------------------ handlers

    async def _search_gate(self, request: web.Request) -> str:
        keyword = request.query.get("q", "")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        hit = Hit(time.monotonic(), request.path, keyword, peer[1] if peer else 0)
        self.hits.append(hit)
        for listener in list(self.on_hit):
            listener(hit)
        if keyword in self.hang:
            await asyncio.sleep(3600)
        if keyword in self.delays:
            await asyncio.sleep(self.delays[keyword])
        return keyword

    async def demo_search(self, request: web.Request) -> web.Response:
        if request.query.get("tbm") == "isch":  # Google's image search shares the path
            return await self.google_search(request)
        keyword = await self._search_gate(request)
        page = shapes.demo_page(keyword, self.results(keyword), PAGE_SIZE, marks_end=keyword not in self.no_end)
        return web.Response(body=page, content_type="text/html")

    async def demo_api(self, request: web.Request) -> web.Response:
        keyword = request.query.get("q", "")
        offset = int(request.query.get("offset", "0"))
        self.api_calls.append((request.path, keyword, offset))
        return web.json_response(shapes.demo_api(self.results(keyword), offset, PAGE_SIZE))

    async def bing_search(self, request: web.Request) -> web.Response:
        keyword = await self._search_gate(request)
        # A parser-blocking script at the end that never comes (a tracker on a filtered
        # network): the results and the page's own script are there, DOMContentLoaded never is.
        stall = '<script src="/stall/tracker.js"></script>' if keyword in self.stall else ""
        # A tracker in the head, on its own host: until it answers the parser reads no further (no result at all).
        tracker = f'<script src="{self.tracker_url}/stall/tracker.js"></script>' if keyword in self.third_party else ""
        page = shapes.bing_page(keyword, self.results(keyword), PAGE_SIZE, head=tracker, tail=stall)
        return web.Response(body=page, content_type="text/html")

    async def google_search(self, request: web.Request) -> web.Response:
        keyword = await self._search_gate(request)
        start = int(request.query.get("start", "0"))
        self.api_calls.append((request.path, keyword, start))
        if keyword in self.google_blocks:
            page = shapes.google_block(self.google_blocks[keyword])
        elif keyword in self.google_basic:
            page = shapes.google_basic_page(keyword, self.results(keyword), start, PAGE_SIZE)
        else:
            page = shapes.google_page(keyword, self.results(keyword), start, PAGE_SIZE)
        return web.Response(body=page, content_type="text/html")

    async def ddg_search(self, request: web.Request) -> web.Response:
        keyword = await self._search_gate(request)
        page = shapes.ddg_page(keyword, challenge=keyword in self.ddg_challenge)
        if keyword in self.ddg_shell:  # what a changed page looks like to the adapter: no token anywhere
            page = shapes.html_page("DuckDuckGo", "<noscript>You are being redirected.</noscript>")
        return web.Response(body=page, content_type="text/html")

    async def ddg_api(self, request: web.Request) -> web.Response:
        keyword = request.query.get("q", "")
        offset = int(request.query.get("s", "0"))
        self.api_calls.append((request.path, keyword, offset))
        if keyword in self.ddg_refused or request.query.get("vqd") != shapes.ddg_token(keyword):
            return web.Response(status=403, text=shapes.DDG_REFUSED)
        # the real i.js pages by 100; here by PAGE_SIZE, so every keyword pages
        return web.json_response(shapes.ddg_results(keyword, self.results(keyword), offset, PAGE_SIZE))

    async def never(self, request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response(status=204)

    async def lookaside(self, request: web.Request) -> web.Response:
        if request.path.startswith("/lookaside/crawler/hang/"):
            return await self.never(request)
        if request.query.get("get_thumbnail"):
            page = "<!doctype html><html><body>Log in to see this content.</body></html>"
            return web.Response(text=page, content_type="text/html")
        return web.Response(status=403, text="Forbidden")

    async def bing_async(self, request: web.Request) -> web.Response:
        keyword = request.query.get("q", "")
        first = int(request.query.get("first", "0"))
        self.api_calls.append((request.path, keyword, first))
        chunk = self.results(keyword)[first : first + PAGE_SIZE]
        return web.Response(text=shapes.bing_items(chunk), content_type="text/html")

    async def consent(self, request: web.Request) -> web.Response:
        self.consents += 1
        return web.Response(status=204)

    async def thumb(self, request: web.Request) -> web.Response:
        return web.Response(body=GIF, content_type="image/gif")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/search", self.demo_search)
        app.router.add_get("/", self.ddg_search)
        app.router.add_get("/i.js", self.ddg_api)
        app.router.add_get("/api/results", self.demo_api)
        app.router.add_get("/images/search", self.bing_search)
        app.router.add_get("/images/async", self.bing_async)
        app.router.add_get("/consent", self.consent)
        app.router.add_get("/thumb/{tail:.*}", self.thumb)
        app.router.add_get("/stall/{tail:.*}", self.never)
        app.router.add_get("/lookaside/{tail:.*}", self.lookaside)
        return app


class _Server:
    def __init__(self, site: SearchSite) -> None:
        self.site = site
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="search-site", daemon=True)
        self.runner: web.AppRunner | None = None

    def start(self) -> str:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> str:
        # handler_cancellation: a killed browser's hanging request is cancelled, not kept.
        self.runner = web.AppRunner(self.site.app(), shutdown_timeout=0.5, handler_cancellation=True, access_log=None)
        await self.runner.setup()
        tcp = web.TCPSite(self.runner, "127.0.0.1", 0)
        await tcp.start()
        port = self.runner.addresses[0][1]
        tracker = web.TCPSite(self.runner, "127.0.0.2", 0)  # another host, as a page's third-party tracker
        await tracker.start()
        self.site.tracker_url = f"http://127.0.0.2:{self.runner.addresses[1][1]}"
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def _search_site_server() -> Iterator[SearchSite]:
    site = SearchSite()
    server = _Server(site)
    site.base_url = server.start()
    try:
        yield site
    finally:
        server.stop()


@pytest.fixture
def search_site(_search_site_server: SearchSite) -> Iterator[SearchSite]:
    """The local search site, with no delays, hangs or logged requests."""
    _search_site_server.reset()
    yield _search_site_server
    _search_site_server.reset()
