"""Search-engine adapters: open an image-search page in a browser and yield candidate image URLs.

An adapter knows one engine's URLs and page structure; the browser pool (`browser.py`) owns
the browsers, retries and politeness. Adapters are stateless and shared by all workers.

Engines
-------
``demo``
    Our offline demo web site (``demoweb/``, package ``facescale.demoweb``): ``GET {base}/search?q=<keyword>``;
    results are ``<a class="fs-result" href=PAGE data-full=IMAGE data-rank=N><img src=THUMB></a>``
    inside ``<div id="results">``; scrolling near the bottom loads more; ``<div id="fs-end">``
    appears when nothing more will come (at once for unknown names).
``bing``
    Bing Images. Microsoft documents no HTML structure for its result pages (its Image Search
    API, the documented route, was retired in 2025), so this adapter follows the structure
    observed on the live site and relied on by open-source scrapers: each result is an
    ``a.iusc`` element whose ``m`` attribute is JSON with ``murl`` (the full image), ``purl``
    (the page it is on) and ``turl`` (Bing's thumbnail); scrolling loads more, and after a few
    pages a "See more images" button (``div.mm_seemore a.btn_seemore``) must be clicked; a
    cookie-consent banner (``#bnp_btn_accept``) may cover the page in some regions. The "more"
    box carries an end-of-results hint, ``data-isend="true"`` on ``div.mm_seemore`` once nothing
    more will come; without it the adapter stops when ``dry_rounds`` scrolls in a row bring
    nothing new. ``m`` holds more keys than the adapter reads (seen on saved real pages:
    ``sid, cturl, cid, purl, murl, turl, md5, shkey, t, mid, desc``). Some ``murl`` values are
    social networks' "lookaside/crawler" endpoints that serve no image to a normal client: the
    downloader rejects them like any URL that yields no image.

``google``
    Google Images, by the structure open-source parsers rely on (icrawler, searx): the
    JavaScript page (``/search?q=&tbm=isch&start=``) keeps its results in
    ``AF_initDataCallback`` script data (``img[1][3][0]`` the full image, the page in the
    ``"2003"`` entry); a client served without JavaScript gets a basic-HTML page of
    ``/imgres?imgurl=&imgrefurl=`` links. Either is read; pages come by ``start=``. Its EU
    consent page is accepted once; its bot check (``/sorry/``, a captcha), an "update your
    browser" page and a JavaScript shell without results end as notes (``consent``,
    ``captcha``, ``unsupported_page``).
``duckduckgo``
    DuckDuckGo Images, by the structure open-source clients rely on (the ``ddgs`` package,
    duckduckgo-images-api, searx): the search page ``/?q=&iax=images&ia=images`` carries a
    per-query ``vqd`` token in its script and holds no result in its HTML; the results come as
    JSON from ``/i.js?l=&o=json&q=&vqd=&f=&p=``: ``results`` with ``image`` (the full image),
    ``url`` (its page), ``thumbnail``, ``title``, sizes and ``source``, and ``next`` (the same
    call with an ``s=`` offset) while more remain. The adapter opens the page in the browser
    and fetches ``i.js`` from inside it (the page's origin and cookies). DuckDuckGo's bot check
    (the "anomaly" modal instead of the page) and an ``i.js`` refusal end as ``blocked`` notes;
    a page without a token, or an answer that is not its JSON, as ``unsupported_page``.

When an engine changes its pages (it will)
------------------------------------------
Symptoms: a keyword that obviously has images returns zero or very few candidates, or an
``engine_error``. To fix an adapter, open the engine's result page in a browser, inspect one
result, and update the class attributes of its adapter: ``result_selector`` (one element per
result), ``extract_js`` and ``parse`` (where the full image and page URLs live), and
``more_selector`` / ``end_selector`` / ``consent_selectors`` (buttons and markers). Then
update the fixture page in ``tests/scraper/conftest.py`` to the new shape and run
``pytest tests/scraper/test_engines.py``: the tests drive real headless Chromium against that
local copy, never the live site. A new engine is a subclass of `ScrollingEngine` (or any class
with the `SearchEngine` protocol) registered in `ENGINES`, with a fixture page and tests.

Each engine's browser loads only what the engine needs: its browsers start with a Chromium
host-resolver rule that resolves the engine's own hosts (its base URL's and ``page_hosts``) and
nothing else (``--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE <host>...``), so a third-party
script, tracker or ad host fails at once instead of holding the page: a parser-blocking
script that never answers would otherwise keep the result list from being parsed at all
(an empty page when the load times out, on every retry). IP literals are covered as well.
``block_third_party=False`` (``scraper.block_third_party``) turns it off, for instance for a
browser that must reach a proxy by name. A result page that is still loading when the
page-load timeout strikes (its own scripts left hanging) is stopped and harvested if its
result list is there, and the timeout is reported to the run (`ScrollingEngine._open`).

Every adapter yields candidates in rank order, makes URLs absolute against the page URL,
keeps only http(s) image URLs, drops repeats of an image URL within a keyword, and stops at
``limit``, at an end marker, or after ``dry_rounds`` rounds of scrolling bring no new
candidates (each round waits at most ``scroll_wait_s``), so it never loops without bound.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

from facescale.errors import ConfigError

from .candidates import Candidate
from .pacing import engine_pacer

if TYPE_CHECKING:  # selenium is imported only by code that drives a browser
    from selenium.webdriver.remote.webdriver import WebDriver

log = logging.getLogger(__name__)

__all__ = [
    "ENGINES",
    "BingEngine",
    "BrowserEngine",
    "DemoEngine",
    "DuckDuckGoEngine",
    "FallbackEngine",
    "GoogleEngine",
    "ScrollingEngine",
    "SearchEngine",
    "get_engine",
    "host_resolver_rules",
    "paced",
]


@runtime_checkable
class SearchEngine(Protocol):
    """What the browser pool needs from an engine adapter."""

    # read-only members: the adapters set them as class attributes
    @property
    def name(self) -> str: ...

    @property
    def max_concurrency(self) -> int:
        """Browsers that may search this engine at once (the pool caps its workers)."""
        ...

    @property
    def browser_args(self) -> tuple[str, ...]:
        """Extra Chromium flags this engine's pages work with."""
        ...

    def search_url(self, keyword: str) -> str:
        """The result page for ``keyword``."""
        ...

    def collect(
        self, driver: WebDriver, keyword: str, limit: int, report: Callable[[str], None] | None = None
    ) -> Iterator[Candidate]:
        """Open the result page and yield at most ``limit`` candidates in rank order.

        ``report`` is called with a ``"<code>: <detail>"`` note for what happened on the way
        that the run should record without failing the keyword (e.g. ``page_load_timeout``).
        """
        ...


# One round trip reads the results not seen yet, and whether the end marker is there; JS is
# single-threaded, so no result can be added between reading the list and reading the marker.
_READ_JS = """
const [start, resultSel, endSel] = arguments;
const extract = (el) => (EXTRACT);
const els = document.querySelectorAll(resultSel);
const items = [];
for (let i = start; i < els.length; i++) {
  try { items.push(extract(els[i])); } catch (e) { items.push(null); }
}
return {items: items, total: els.length, end: !!(endSel && document.querySelector(endSel)),
        base: document.baseURI};
"""

# Dismiss a consent banner and click a visible "more" button if there are any, then scroll to
# the bottom. The synthetic scroll event also wakes pages whose results fit the window.
_MORE_JS = """
const [consentSels, moreSel] = arguments;
const visible = (b) => b && b.offsetParent !== null && !b.disabled;
for (const sel of consentSels) {
  const b = document.querySelector(sel);
  if (visible(b)) { b.click(); break; }
}
let clicked = false;
if (moreSel) {
  for (const b of document.querySelectorAll(moreSel)) {
    if (visible(b)) { b.click(); clicked = true; break; }
  }
}
const root = document.scrollingElement || document.documentElement;
window.scrollTo(0, root.scrollHeight);
window.dispatchEvent(new Event('scroll'));
return clicked;
"""

_PROGRESS_JS = """
const [resultSel, endSel, moreSel] = arguments;
const more = moreSel ? Array.from(document.querySelectorAll(moreSel)).some((b) => b.offsetParent !== null) : false;
return {total: document.querySelectorAll(resultSel).length,
        end: !!(endSel && document.querySelector(endSel)), more: more};
"""

_CONSENT_JS = """
for (const sel of arguments[0]) {
  const b = document.querySelector(sel);
  if (b && b.offsetParent !== null) { b.click(); return sel; }
}
return null;
"""


@dataclass(frozen=True)
class BrowserEngine:
    """What every adapter here shares: its address, and the browser flags its pages need (host rule included)."""

    base_url: str
    block_third_party: bool = field(default=True, kw_only=True)  # resolve only its own hosts (module docstring)
    # least time between two of this engine's page loads in this process, whichever worker loads them
    page_interval_s: float = field(default=0.0, kw_only=True)

    name: ClassVar[str] = "browser"
    max_concurrency: ClassVar[int] = 4
    chromium_args: ClassVar[tuple[str, ...]] = ()  # flags this engine's pages work with
    page_hosts: ClassVar[tuple[str, ...]] = ()  # hosts its pages need besides the base URL's (wildcards allowed)

    @property
    def browser_args(self) -> tuple[str, ...]:
        """Chromium flags for this engine's browsers: its own, and the rule that resolves only its hosts."""
        if not self.block_third_party:
            return self.chromium_args
        return (*self.chromium_args, host_resolver_rules(self.hosts))

    @property
    def hosts(self) -> tuple[str, ...]:
        """The hosts this engine's pages may load from: the base URL's and ``page_hosts``."""
        base = urlsplit(self.base_url).hostname
        return tuple(dict.fromkeys([*([base] if base else []), *self.page_hosts]))

    def _load(self, driver: WebDriver, url: str) -> None:
        """Load one of this engine's pages, after its turn (`page_interval_s`, shared by the process)."""
        self._pace()
        driver.get(url)

    def _pace(self) -> None:
        if self.page_interval_s > 0:
            engine_pacer(self.name, self.page_interval_s).wait()


@dataclass(frozen=True)
class ScrollingEngine(BrowserEngine):
    """An engine whose result page grows as it is scrolled (optionally with a "more" button).

    Subclasses set the selectors, ``search_url`` and, when a result's URLs are not in the
    ``{full, page}`` object ``extract_js`` returns, ``parse``. The tunables are fields so
    tests and callers can tighten them per instance.
    """

    scroll_wait_s: float = 4.0  # longest wait for new results after one scroll / click
    dry_rounds: int = 3  # rounds in a row without a new candidate before giving up (>= 2 with a "more" button)
    poll_s: float = 0.1

    name: ClassVar[str] = "scrolling"
    result_selector: ClassVar[str] = ""
    end_selector: ClassVar[str | None] = None
    more_selector: ClassVar[str | None] = None
    consent_selectors: ClassVar[tuple[str, ...]] = ()
    # A JS expression over `el` (one result element) evaluated in the page.
    extract_js: ClassVar[str] = "({full: el.getAttribute('data-full'), page: el.getAttribute('href')})"

    def search_url(self, keyword: str) -> str:
        raise NotImplementedError

    def parse(self, raw: Any) -> tuple[str | None, str | None]:
        """(full image URL, page URL) of one result as ``extract_js`` returned it; relative is fine."""
        if not isinstance(raw, dict):
            return None, None
        return _text(raw.get("full")), _text(raw.get("page"))

    def collect(
        self, driver: WebDriver, keyword: str, limit: int, report: Callable[[str], None] | None = None
    ) -> Iterator[Candidate]:
        if limit <= 0:
            return
        url = self.search_url(keyword)
        read_js = _READ_JS.replace("EXTRACT", self.extract_js)  # spliced in, not eval'd: pages' CSP may forbid eval
        self._open(driver, url, keyword, read_js, report)
        self._accept_consent(driver)
        seen: set[str] = set()
        yielded = 0
        position = 0  # result elements read so far; the rank of the next one
        dry = 0
        while True:
            page = driver.execute_script(read_js, position, self.result_selector, self.end_selector) or {}
            items: list[Any] = page.get("items") or []
            base = page.get("base") or url
            fresh = 0
            for rank, raw in enumerate(items, start=position):
                candidate = self._candidate(keyword, raw, rank, base, seen)
                if candidate is None:
                    continue
                fresh += 1
                yielded += 1
                yield candidate
                if yielded >= limit:
                    return
            position += len(items)
            if page.get("end"):
                log.debug("%s %r: end of results after %d", self.name, keyword, position)
                return
            dry = 0 if fresh else dry + 1
            if dry >= self.dry_rounds:
                log.debug("%s %r: no new results after %d rounds, stopping at %d", self.name, keyword, dry, position)
                return
            clicked = driver.execute_script(_MORE_JS, list(self.consent_selectors), self.more_selector)
            self._wait_for_more(driver, position, wait_for_button=not clicked)

    def _open(
        self, driver: WebDriver, url: str, keyword: str, read_js: str, report: Callable[[str], None] | None
    ) -> None:
        """Load the result page; on a page-load timeout keep what has loaded if it holds results.

        A result page whose own scripts, ads or trackers never finish loading (a slow or
        filtered network) can hold a complete result list long before the browser calls it
        loaded: the load is stopped (``window.stop()``) and the results harvested, and the
        timeout is reported. A page that shows no result when stopped is a real timeout: the
        exception goes to the browser pool, which retries the keyword.
        """
        from selenium.common.exceptions import TimeoutException

        try:
            self._load(driver, url)
        except TimeoutException:
            driver.execute_script("window.stop();")
            page = driver.execute_script(read_js, 0, self.result_selector, self.end_selector) or {}
            total = int(page.get("total") or 0)
            if not total:
                raise
            note = f"page_load_timeout: the result page was still loading; stopped it with {total} results in place"
            log.warning("%s %r: %s", self.name, keyword, note)
            if report is not None:
                report(note)

    def _candidate(self, keyword: str, raw: Any, rank: int, base: str, seen: set[str]) -> Candidate | None:
        try:
            full, page = self.parse(raw)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # one odd result, not the keyword
            log.debug("%s: unreadable result %d for %r: %s", self.name, rank, keyword, exc)
            return None
        source = _absolute(base, full)
        if source is None or source in seen:
            return None
        seen.add(source)
        return Candidate(keyword=keyword, source_url=source, page_url=_absolute(base, page), rank=rank)

    def _accept_consent(self, driver: WebDriver) -> None:
        if self.consent_selectors:
            clicked = driver.execute_script(_CONSENT_JS, list(self.consent_selectors))
            if clicked:
                log.info("%s: accepted the consent banner (%s)", self.name, clicked)

    def _wait_for_more(self, driver: WebDriver, seen_total: int, wait_for_button: bool) -> None:
        """Wait (bounded) until more results, the end marker, or (unless one was just clicked) a "more" button."""
        deadline = time.monotonic() + self.scroll_wait_s
        more_selector = self.more_selector if wait_for_button else None
        while time.monotonic() < deadline:
            state = driver.execute_script(_PROGRESS_JS, self.result_selector, self.end_selector, more_selector)
            if state.get("end") or state.get("more") or int(state.get("total", 0)) > seen_total:
                return
            time.sleep(self.poll_s)


@dataclass(frozen=True)
class DemoEngine(ScrollingEngine):
    """Our offline demo web site (see the module docstring for its markup)."""

    scroll_wait_s: float = 3.0
    name: ClassVar[str] = "demo"
    max_concurrency: ClassVar[int] = 16
    # Results are read from data-full/href: thumbnails need not be fetched, decoded or drawn
    # (bench_search: 0.54 -> 0.22 CPU-s per keyword). Bing keeps images on until its
    # lazy loading has been checked without them.
    chromium_args: ClassVar[tuple[str, ...]] = ("--blink-settings=imagesEnabled=false",)
    result_selector: ClassVar[str] = "#results a.fs-result"
    end_selector: ClassVar[str | None] = "#fs-end"
    extract_js: ClassVar[str] = "({full: el.getAttribute('data-full'), page: el.getAttribute('href')})"

    def search_url(self, keyword: str) -> str:
        return f"{self.base_url.rstrip('/')}/search?{urlencode({'q': keyword})}"


@dataclass(frozen=True)
class BingEngine(ScrollingEngine):
    """Bing Images, by the page structure observed on the live site (see the module docstring)."""

    base_url: str = "https://www.bing.com"
    name: ClassVar[str] = "bing"
    # its scripts (r.bing.com), thumbnails (th.bing.com, tse*.mm.bing.net) and consent banner
    page_hosts: ClassVar[tuple[str, ...]] = ("bing.com", "*.bing.com", "*.bing.net")
    max_concurrency: ClassVar[int] = 4
    result_selector: ClassVar[str] = "a.iusc"
    end_selector: ClassVar[str | None] = "div.mm_seemore[data-isend='true']"
    more_selector: ClassVar[str | None] = "div.mm_seemore a.btn_seemore, a.btn_seemore, input.btn_seemore"
    consent_selectors: ClassVar[tuple[str, ...]] = ("#bnp_btn_accept", "#bnp_container button[id*='accept']")
    extract_js: ClassVar[str] = "({m: el.getAttribute('m')})"

    def search_url(self, keyword: str) -> str:
        query = urlencode({"q": keyword, "form": "HDRSC2", "first": 1})
        return f"{self.base_url.rstrip('/')}/images/search?{query}"

    def parse(self, raw: Any) -> tuple[str | None, str | None]:
        if not isinstance(raw, dict) or not raw.get("m"):
            return None, None
        meta = json.loads(raw["m"])
        if not isinstance(meta, dict):
            return None, None
        return _text(meta.get("murl")), _text(meta.get("purl"))


# What a Google result page holds: its script data, basic-HTML result links, and what it is instead.
_GOOGLE_JS = r"""
const text = (document.body && document.body.innerText) || '';
const scripts = [...document.scripts].map((s) => s.textContent).filter((t) => t.includes('AF_initDataCallback'));
// one per result cell (a result without its /imgres link still takes its rank)
const basic = [...document.querySelectorAll('td img')].map((img) => {
  const a = img.closest('a[href*="/imgres?"]'); return a ? a.href : null; });
let block = null;
if (location.pathname.startsWith('/sorry/') || document.querySelector('#captcha-form, .g-recaptcha')) {
  block = 'captcha';
} else if (location.hostname.startsWith('consent.') || document.querySelector('form[action*="consent.google"]')) {
  block = 'consent';
} else if (/update your browser|browser isn.t supported/i.test(text)) {
  block = 'update';
} else if (!scripts.length && !basic.some((b) => b) && (document.querySelector('noscript meta[http-equiv="refresh"]')
           || /not redirected/i.test(document.documentElement.innerHTML))) {
  block = 'shell';
}
return {scripts: scripts, basic: basic, block: block, base: document.baseURI};
"""

_GOOGLE_ACCEPT_JS = """
const b = document.querySelector('form[action*="consent.google"] button[aria-label^="Accept"], '
                                 + 'form[action*="consent.google"] button');
if (b) { b.click(); return true; } return false;
"""

_GOOGLE_NOTES = {
    "captcha": "captcha: Google's bot check (its sorry page)",
    "consent": "consent: Google's consent page stayed after accepting it",
    "update": "unsupported_page: Google's 'update your browser' page",
    "shell": "unsupported_page: a page that needs JavaScript and holds no result",
}


@dataclass(frozen=True)
class GoogleEngine(BrowserEngine):
    """Google Images: results from the page's script data, or from the basic-HTML page when that came back.

    The JavaScript page keeps its results in ``AF_initDataCallback({key: 'ds:1', ..., data: [...]})``
    blocks: each result an entry ``[1, [0, id, [thumbnail, h, w], [image, h, w], ..., {"2003":
    [null, id, page, title]}]]`` (``img[1][3][0]``, as icrawler and other open-source parsers
    read it). A client Google serves without JavaScript gets ``/imgres?imgurl=&imgrefurl=`` links.
    Pages come 100 at a time by ``start=``. Its consent page is accepted once (``consent`` note when
    it stays); its bot check (``/sorry/``), an "update your browser" page and a JavaScript shell
    without results end as notes (``captcha``, ``unsupported_page``), never as an empty success.
    """

    base_url: str = "https://www.google.com"
    name: ClassVar[str] = "google"
    max_concurrency: ClassVar[int] = 2
    page_hosts: ClassVar[tuple[str, ...]] = (
        "google.com", "*.google.com", "*.gstatic.com", "*.googleusercontent.com",  # consent.google.com included
    )

    def search_url(self, keyword: str, start: int = 0) -> str:
        query = {"q": keyword, "tbm": "isch", "hl": "en", **({"start": start} if start else {})}
        return f"{self.base_url.rstrip('/')}/search?{urlencode(query)}"

    def collect(
        self, driver: WebDriver, keyword: str, limit: int, report: Callable[[str], None] | None = None
    ) -> Iterator[Candidate]:
        note = report or (lambda _: None)
        seen: set[str] = set()
        rank = 0
        while len(seen) < limit:
            self._load(driver, self.search_url(keyword, rank))
            page = driver.execute_script(_GOOGLE_JS) or {}
            if page.get("block") == "consent" and driver.execute_script(_GOOGLE_ACCEPT_JS):
                log.info("%s: accepted the consent page", self.name)
                self._load(driver, self.search_url(keyword, rank))
                page = driver.execute_script(_GOOGLE_JS) or {}
            if page.get("block"):
                note(_GOOGLE_NOTES[page["block"]])
                return
            base = page.get("base") or self.base_url
            found = [*google_results(page.get("scripts") or []), *_imgres(page.get("basic") or [])]
            fresh = 0
            for full, page_url in found:
                source = _absolute(base, full)
                if source is not None and source not in seen:
                    seen.add(source)
                    fresh += 1
                    yield Candidate(keyword=keyword, source_url=source, page_url=_absolute(base, page_url), rank=rank)
                    if len(seen) >= limit:
                        return
                rank += 1
            if not fresh:
                return


def google_results(scripts: Iterable[str]) -> list[tuple[str | None, str | None]]:
    """(image URL, page URL) of each result in Google's ``AF_initDataCallback`` script data, in order."""
    found: list[tuple[str | None, str | None]] = []
    for text in scripts:
        for match in re.finditer(r"AF_initDataCallback\((\{.*?data:(\[.*\]), sideChannel.*?\})\);", text, re.S):
            try:
                data = json.loads(match.group(2))
            except ValueError:
                continue
            found.extend(_google_entries(data))
    return found


def _google_entries(node: Any) -> Iterator[tuple[str | None, str | None]]:
    if not isinstance(node, list):
        return
    if len(node) == 2 and node[0] == 1 and isinstance(node[1], list) and len(node[1]) > 3:
        entry = node[1]
        image = entry[3] if isinstance(entry[3], list) and entry[3] and isinstance(entry[3][0], str) else None
        meta = next((e for e in entry if isinstance(e, dict) and "2003" in e), {}).get("2003") or []
        page = meta[2] if len(meta) > 2 and isinstance(meta[2], str) else None
        yield (image[0] if image else None), page
        return
    for child in node:
        yield from _google_entries(child)


def _imgres(links: Iterable[str | None]) -> list[tuple[str | None, str | None]]:
    """(image URL, page URL) of basic-HTML ``/imgres?imgurl=&imgrefurl=`` links (None: a result without one)."""
    out: list[tuple[str | None, str | None]] = []
    for link in links:
        query = parse_qs(urlsplit(link or "").query)
        image, page = query.get("imgurl", []), query.get("imgrefurl", [])
        out.append((image[0] if image else None, page[0] if page else None))
    return out


# The page's vqd token, as DuckDuckGo's own script carries it (vqd="4-...", vqd='...' or vqd=4-...&).
_VQD_JS = r"""
const m = document.documentElement.innerHTML.match(/vqd=["']?([\w-]+)/);
return {vqd: m ? m[1] : null, anomaly: !!document.querySelector('.anomaly-modal__modal, #challenge-form'),
        base: document.baseURI};
"""

# One i.js page, fetched by the page itself (its origin, its cookies): {status, text}.
_FETCH_JS = """
const [url, done] = [arguments[0], arguments[arguments.length - 1]];
fetch(url, {credentials: 'same-origin', headers: {'Accept': 'application/json, text/javascript, */*; q=0.01'}})
  .then(async (r) => done({status: r.status, text: await r.text()}))
  .catch((e) => done({status: 0, text: String(e)}));
"""


@dataclass(frozen=True)
class DuckDuckGoEngine(BrowserEngine):
    """DuckDuckGo Images: the search page gives a ``vqd`` token; the results come as JSON from ``i.js``.

    The browser opens the real search page (its cookies, its token), then asks ``i.js`` for each
    page of results from inside it, following ``next`` (``s=`` offsets). A page without a token
    (DuckDuckGo's bot check, or a page this adapter does not know) and an ``i.js`` that refuses or
    answers something other than JSON end as engine notes (``blocked: ...``, ``unsupported_page: ...``),
    never as an empty success.
    """

    base_url: str = "https://duckduckgo.com"
    name: ClassVar[str] = "duckduckgo"
    max_concurrency: ClassVar[int] = 2
    page_hosts: ClassVar[tuple[str, ...]] = ("duckduckgo.com", "*.duckduckgo.com")

    def search_url(self, keyword: str) -> str:
        return f"{self.base_url.rstrip('/')}/?{urlencode({'q': keyword, 'iax': 'images', 'ia': 'images'})}"

    def collect(
        self, driver: WebDriver, keyword: str, limit: int, report: Callable[[str], None] | None = None
    ) -> Iterator[Candidate]:
        if limit <= 0:
            return
        note = report or (lambda _: None)
        url = self.search_url(keyword)
        self._load(driver, url)
        page = driver.execute_script(_VQD_JS) or {}
        if not page.get("vqd"):
            why = "a bot check (the anomaly page)" if page.get("anomaly") else "no vqd token on the search page"
            note(f"{'blocked' if page.get('anomaly') else 'unsupported_page'}: {why}")
            return
        base = page.get("base") or url
        query = urlencode({"l": "us-en", "o": "json", "q": keyword, "vqd": page["vqd"], "f": ",,,", "p": "1"})
        following: str | None = f"i.js?{query}"
        seen: set[str] = set()
        rank = yielded = 0
        while following:
            self._pace()
            answer = driver.execute_async_script(_FETCH_JS, urljoin(base, following)) or {}
            status = int(answer.get("status") or 0)
            if status != 200:
                note(f"blocked: i.js answered {status or 'nothing'}")
                return
            try:
                data = json.loads(answer.get("text") or "")
                results = data["results"]
            except (ValueError, KeyError, TypeError):
                note("unsupported_page: i.js answered something other than its JSON")
                return
            for item in results:
                full = _text(item.get("image")) if isinstance(item, dict) else None
                source = _absolute(base, full)
                if source is not None and source not in seen:
                    seen.add(source)
                    page_url = _absolute(base, _text(item.get("url")))
                    yield Candidate(keyword=keyword, source_url=source, page_url=page_url, rank=rank)
                    yielded += 1
                    if yielded >= limit:
                        return
                rank += 1
            following = _text(data.get("next"))


#: Note codes that say an engine gave up on a keyword (the next engine is asked).
BLOCK_CODES = frozenset({"blocked", "unsupported_page", "consent", "captcha", "timeout"})


@dataclass(frozen=True)
class FallbackEngine:
    """Several engines in order of preference: for each keyword, the next is asked when one blocks or runs short.

    One browser serves them all (their flags, and one host rule resolving every engine's hosts).
    An engine that ends with a block note (`BLOCK_CODES`: its bot check, a refusal, a page it
    cannot read, a page that never came) or with fewer results than asked hands the keyword to
    the next one, which is asked for the rest; an image URL one engine gave is not taken again
    from the next. Each candidate names the engine that found it (the RAW row's ``engine``), and
    each note the engine it is about (``"blocked: duckduckgo: ..."``).
    """

    engines: tuple[SearchEngine, ...]

    @property
    def name(self) -> str:
        return ",".join(e.name for e in self.engines)

    @property
    def max_concurrency(self) -> int:
        return min(e.max_concurrency for e in self.engines)

    @property
    def browser_args(self) -> tuple[str, ...]:
        flags = [a for e in self.engines for a in e.browser_args if not a.startswith(_RULES)]
        if all(any(a.startswith(_RULES) for a in e.browser_args) for e in self.engines):
            hosts = [h for e in self.engines for h in getattr(e, "hosts", ())]
            flags.append(host_resolver_rules(dict.fromkeys(hosts)))
        return tuple(dict.fromkeys(flags))

    def search_url(self, keyword: str) -> str:
        return self.engines[0].search_url(keyword)

    def collect(
        self, driver: WebDriver, keyword: str, limit: int, report: Callable[[str], None] | None = None
    ) -> Iterator[Candidate]:
        from selenium.common.exceptions import TimeoutException

        seen: set[str] = set()
        for engine in self.engines:
            wanted = limit - len(seen)
            if wanted <= 0:
                return
            notes: list[str] = []

            def note(text: str, engine: SearchEngine = engine, notes: list[str] = notes) -> None:
                code, _, detail = text.partition(": ")
                notes.append(code)
                if report is not None:
                    report(f"{code}: {engine.name}: {detail}")

            try:
                for candidate in engine.collect(driver, keyword, wanted + len(seen), report=note):
                    if candidate.source_url in seen:
                        continue
                    seen.add(candidate.source_url)
                    yield replace(candidate, engine=engine.name)
                    if len(seen) >= limit:
                        return
            except TimeoutException as exc:  # its page never came: the next engine may answer
                note(f"timeout: the result page did not load ({str(exc).strip()[:80]})")
            if engine is not self.engines[-1]:
                why = "blocked" if BLOCK_CODES & set(notes) else f"gave {len(seen)} of {limit}"
                log.info("%s %s for %r: the next engine is asked", engine.name, why, keyword)


_RULES = "--host-resolver-rules="


def paced(engine: SearchEngine, interval_s: float) -> SearchEngine:
    """``engine`` with every one of its page loads spaced ``interval_s`` apart in this process (each engine of a
    `FallbackEngine` on its own)."""
    if isinstance(engine, FallbackEngine):
        return replace(engine, engines=tuple(paced(e, interval_s) for e in engine.engines))
    if isinstance(engine, BrowserEngine):
        return replace(engine, page_interval_s=interval_s)
    return engine


def host_resolver_rules(hosts: Iterable[str]) -> str:
    """The Chromium flag that resolves ``hosts`` (wildcards allowed) as usual and every other host to nothing."""
    excluded = "".join(f", EXCLUDE {host}" for host in hosts)
    return f"--host-resolver-rules=MAP * ~NOTFOUND{excluded}"


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _absolute(base: str, url: str | None) -> str | None:
    """``url`` made absolute against ``base``, or None unless it is http(s) with a host."""
    if not url:
        return None
    joined = urljoin(base, url)
    parts = urlsplit(joined)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return joined


def _demo(base_url: str | None) -> SearchEngine:
    if not base_url:
        raise ConfigError("the demo engine needs a base URL: the address of the demo web site")
    return DemoEngine(base_url)


def _bing(base_url: str | None) -> SearchEngine:
    return BingEngine(base_url) if base_url else BingEngine()


# name -> factory(base_url): base_url overrides the engine's address (tests, mirrors).
def _google(base_url: str | None) -> SearchEngine:
    return GoogleEngine(base_url) if base_url else GoogleEngine()


def _duckduckgo(base_url: str | None) -> SearchEngine:
    return DuckDuckGoEngine(base_url) if base_url else DuckDuckGoEngine()


ENGINES: dict[str, Callable[[str | None], SearchEngine]] = {
    "demo": _demo, "bing": _bing, "duckduckgo": _duckduckgo, "google": _google,
}


def get_engine(name: str, base_url: str | None = None, *, block_third_party: bool = True) -> SearchEngine:
    """The adapter called ``name`` (case-insensitive); ConfigError names the known ones.

    Several names separated by commas (``"duckduckgo,bing"``) give a `FallbackEngine` over them,
    in that order; ``base_url`` then applies to each. ``block_third_party=False``: the browsers
    resolve every host (see the module docstring).
    """
    names = [n.strip().lower() for n in name.split(",") if n.strip()]
    if len(names) > 1:
        if len(set(names)) != len(names):
            raise ConfigError(f"search engine {name!r} names an engine twice")
        return FallbackEngine(tuple(get_engine(n, base_url, block_third_party=block_third_party) for n in names))
    factory = ENGINES.get(names[0] if names else "")
    if factory is None:
        known = ", ".join(sorted(ENGINES))
        raise ConfigError(f"unknown search engine {name!r} (known: {known})")
    engine = factory(base_url)
    if not block_third_party and isinstance(engine, BrowserEngine):
        engine = replace(engine, block_third_party=False)
    return engine
