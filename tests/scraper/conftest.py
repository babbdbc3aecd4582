"""A local image-search site for the engine and browser tests, in the demo and Bing page shapes.

One aiohttp server on 127.0.0.1 (in a background thread, shared by the session) serves:

- demo shape: ``/search?q=`` (first page rendered, ``#fs-end`` when done) and
  ``/api/results?q=&offset=`` (JSON ``{"results": [{full, page, thumb, rank}], "next"}``),
  loaded by the page's JavaScript when it is scrolled near the bottom;
- Bing shape: ``/images/search?q=&form=HDRSC2&first=1`` (``a.iusc`` with JSON ``m``), a cookie
  banner (``#bnp_btn_accept``) that blocks loading until accepted, scroll loading from
  ``/images/async?q=&first=``, and a "See more images" button (``div.mm_seemore a.btn_seemore``)
  that must be clicked after every scroll-loaded page, and ``data-isend="true"`` on it when
  nothing more will come; ``m`` holds every key a real result's has. A keyword in
  ``stall`` gets a tracker script that never arrives (the page never finishes loading), and
  "Lookaside Person" has crawler-only image URLs (an HTML page, a 403, no answer at all).

Every name in `CATALOGUE` has that many results; result 3 is unreadable (no ``data-full`` /
broken ``m`` JSON), result 5 repeats result 2's image, result 8 is a ``data:`` URL; even
results are relative URLs, odd ones absolute on another host. `SearchSite.expected` says
what an adapter must yield. Tests can delay or hang a keyword's search page and read the
log of search-page requests (time, keyword, the browser's TCP port).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin

import pytest
from aiohttp import web

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
    hits: list[Hit] = field(default_factory=list)
    api_calls: list[tuple[str, str, int]] = field(default_factory=list)  # (path, keyword, offset)
    consents: int = 0
    on_hit: list[Callable[[Hit], None]] = field(default_factory=list)  # called in the server thread

    def reset(self) -> None:
        self.delays.clear()
        self.hang.clear()
        self.no_end.clear()
        self.stall.clear()
        self.hits.clear()
        self.api_calls.clear()
        self.on_hit.clear()
        self.consents = 0

    @staticmethod
    def results(keyword: str) -> list[dict[str, Any]]:
        slug = quote(keyword.lower().replace(" ", "-"))
        out: list[dict[str, Any]] = []
        for i in range(CATALOGUE.get(keyword, 0)):
            full = f"/img/{slug}/{i}.jpg" if i % 2 == 0 else f"http://cdn.example.test/{slug}/{i}.jpg"
            out.append({"full": full, "page": f"/page/{slug}/{i}", "thumb": f"/thumb/{slug}/{i}.gif", "rank": i})
        if len(out) > 3:
            out[3]["full"] = None  # unreadable
        if len(out) > 5:
            out[5]["full"] = out[2]["full"]  # a repeat
        if len(out) > 8:
            out[8]["full"] = "data:image/gif;base64,R0lGODlhAQABAAAAACw="  # not http(s)
        if keyword == "Lookaside Person":
            for i, path in LOOKASIDE.items():
                out[i]["full"] = path
        return out

    def expected(self, keyword: str) -> list[tuple[str, str, int]]:
        """(absolute image URL, absolute page URL, rank) an adapter must yield, in order."""
        seen: set[str] = set()
        out = []
        for item in self.results(keyword):
            full = item["full"]
            if not full or full.startswith("data:"):
                continue
            url = urljoin(self.base_url + "/", full)
            if url in seen:
                continue
            seen.add(url)
            out.append((url, urljoin(self.base_url + "/", item["page"]), item["rank"]))
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
        keyword = await self._search_gate(request)
        results = self.results(keyword)
        first = results[:PAGE_SIZE]
        nxt = PAGE_SIZE if len(results) > PAGE_SIZE else None
        end = "" if nxt is not None or keyword in self.no_end else '<div id="fs-end"></div>'
        body = DEMO_PAGE.format(
            title=html.escape(keyword),
            items="".join(_demo_item(r) for r in first),
            end=end,
            state=json.dumps({"q": keyword, "next": nxt, "noEnd": keyword in self.no_end}),
        )
        return web.Response(text=body, content_type="text/html")

    async def demo_api(self, request: web.Request) -> web.Response:
        keyword = request.query.get("q", "")
        offset = int(request.query.get("offset", "0"))
        self.api_calls.append((request.path, keyword, offset))
        results = self.results(keyword)
        chunk = results[offset : offset + PAGE_SIZE]
        nxt = offset + PAGE_SIZE if offset + PAGE_SIZE < len(results) else None
        return web.json_response({"results": chunk, "next": nxt})

    async def bing_search(self, request: web.Request) -> web.Response:
        keyword = await self._search_gate(request)
        results = self.results(keyword)
        # A parser-blocking script at the end that never comes (a tracker on a filtered
        # network): the results and the page's own script are there, DOMContentLoaded never is.
        stall = '<script src="/stall/tracker.js"></script>' if keyword in self.stall else ""
        body = BING_PAGE.format(
            title=html.escape(keyword),
            items="".join(_bing_item(r) for r in results[:PAGE_SIZE]),
            isend="true" if len(results) <= PAGE_SIZE else "false",
            state=json.dumps({"q": keyword, "next": PAGE_SIZE, "total": len(results), "page": PAGE_SIZE}),
            stall=stall,
        )
        return web.Response(text=body, content_type="text/html")

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
        return web.Response(text="".join(_bing_item(r) for r in chunk), content_type="text/html")

    async def consent(self, request: web.Request) -> web.Response:
        self.consents += 1
        return web.Response(status=204)

    async def thumb(self, request: web.Request) -> web.Response:
        return web.Response(body=GIF, content_type="image/gif")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/search", self.demo_search)
        app.router.add_get("/api/results", self.demo_api)
        app.router.add_get("/images/search", self.bing_search)
        app.router.add_get("/images/async", self.bing_async)
        app.router.add_get("/consent", self.consent)
        app.router.add_get("/thumb/{tail:.*}", self.thumb)
        app.router.add_get("/stall/{tail:.*}", self.never)
        app.router.add_get("/lookaside/{tail:.*}", self.lookaside)
        return app


def _demo_item(r: dict[str, Any]) -> str:
    full = f' data-full="{html.escape(r["full"])}"' if r["full"] else ""
    return (
        f'<a class="fs-result" href="{html.escape(r["page"])}"{full} data-rank="{r["rank"]}">'
        f'<img src="{html.escape(r["thumb"])}"></a>'
    )


def _bing_item(r: dict[str, Any]) -> str:
    # the keys of a real result's m attribute, in their order on saved pages
    digest = hashlib.md5(str(r["full"]).encode()).hexdigest()
    meta = json.dumps({
        "sid": "", "cturl": f"https://www.bing.com/images/click?q={r['rank']}", "cid": digest[:8],
        "purl": r["page"], "murl": r["full"], "turl": r["thumb"], "md5": digest, "shkey": "",
        "t": f"Result {r['rank']}", "mid": digest[8:24].upper(), "desc": "",
    })
    if r["full"] is None:
        meta = '{"murl": "broken'  # what a half-rendered attribute looks like
    return (
        '<li><div class="iuscp"><div class="imgpt">'
        f'<a class="iusc" href="/images/search?view=detailV2&amp;id={r["rank"]}" m="{html.escape(meta)}">'
        f'<img class="mimg" src="{html.escape(r["thumb"])}"></a></div></div></li>'
    )


DEMO_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>a.fs-result {{ display: block; height: 160px; }}</style></head>
<body><div id="results">{items}</div>{end}
<script>
const state = {state};
let loading = false;
function nearBottom() {{
  return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 300;
}}
async function more() {{
  if (loading || state.next === null || !nearBottom()) return;
  loading = true;
  const r = await fetch('/api/results?q=' + encodeURIComponent(state.q) + '&offset=' + state.next);
  const data = await r.json();
  const box = document.getElementById('results');
  for (const it of data.results) {{
    const a = document.createElement('a');
    a.className = 'fs-result';
    a.setAttribute('href', it.page);
    if (it.full) a.setAttribute('data-full', it.full);
    a.setAttribute('data-rank', it.rank);
    const img = document.createElement('img');
    img.src = it.thumb;
    a.appendChild(img);
    box.appendChild(a);
  }}
  state.next = data.next;
  if (state.next === null && !state.noEnd) {{
    const end = document.createElement('div');
    end.id = 'fs-end';
    document.body.appendChild(end);
  }}
  loading = false;
}}
window.addEventListener('scroll', more);
</script></body></html>
"""

BING_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - Bing images</title>
<style>li {{ display: block; height: 160px; }} .mm_seemore {{ display: none; }}
#bnp_container {{ position: fixed; top: 0; left: 0; right: 0; height: 80px; background: #fff; }}</style></head>
<body>
<div id="bnp_container"><button id="bnp_btn_accept">Accept</button></div>
<div id="mmComponent_images_1"><ul class="dgControl_list">{items}</ul></div>
<div class="mm_seemore" data-isend="{isend}">
<a class="btn_seemore cbtn mBtn" href="javascript:void(0)">See more images</a></div>
<script>
const state = {state};
let consented = false, loading = false, needsButton = false;
const seeMore = document.querySelector('.mm_seemore');
document.getElementById('bnp_btn_accept').addEventListener('click', () => {{
  consented = true;
  document.getElementById('bnp_container').remove();
  fetch('/consent');
}});
async function load() {{
  if (loading || state.next >= state.total) return;
  loading = true;
  const r = await fetch('/images/async?q=' + encodeURIComponent(state.q) + '&first=' + state.next);
  document.querySelector('ul.dgControl_list').insertAdjacentHTML('beforeend', await r.text());
  state.next += state.page;
  needsButton = true;  // after every scroll-loaded page, a person must ask for more
  if (state.next >= state.total) seeMore.setAttribute('data-isend', 'true');
  loading = false;
}}
window.addEventListener('scroll', () => {{
  if (!consented || loading || state.next >= state.total) return;
  const bottom = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 300;
  if (!bottom) return;
  if (needsButton) {{ seeMore.style.display = 'block'; return; }}
  load();
}});
seeMore.querySelector('a').addEventListener('click', () => {{
  seeMore.style.display = 'none';
  needsButton = false;
  load();
}});
</script>{stall}</body></html>
"""


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
