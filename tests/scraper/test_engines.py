"""Engine adapters: the registry, URLs, and real headless Chromium on local demo- and Bing-shaped sites."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import pytest
from selenium.common.exceptions import TimeoutException

from facescale.demoweb import DemoWeb, truth
from facescale.errors import ConfigError
from facescale.scraper.browser import ManagedDriver, make_driver
from facescale.scraper.candidates import Candidate
from facescale.scraper.engines import (
    ENGINES,
    BingEngine,
    DemoEngine,
    DuckDuckGoEngine,
    FallbackEngine,
    GoogleEngine,
    SearchEngine,
    get_engine,
    paced,
)

if TYPE_CHECKING:
    from conftest import SearchSite


def _rows(candidates: list[Candidate]) -> list[tuple[str, str | None, int]]:
    return [(c.source_url, c.page_url, c.rank) for c in candidates]


# --------------------------------------------------------------------------- no browser


def test_registry_and_unknown_engine() -> None:
    assert set(ENGINES) >= {"demo", "bing"}
    demo = get_engine("demo", "http://127.0.0.1:9")
    assert isinstance(demo, DemoEngine) and isinstance(demo, SearchEngine)
    assert get_engine(" Bing ").name == "bing"
    with pytest.raises(ConfigError, match=r"unknown search engine 'gogle' \(known: bing, demo, duckduckgo, google\)"):
        get_engine("gogle")
    with pytest.raises(ConfigError, match="demo engine needs a base URL"):
        get_engine("demo")


def test_search_urls_encode_the_keyword() -> None:
    demo = get_engine("demo", "http://127.0.0.1:8765/")
    assert demo.search_url("Zoë Saldaña & co") == "http://127.0.0.1:8765/search?q=Zo%C3%AB+Salda%C3%B1a+%26+co"
    assert get_engine("bing").search_url("Ada Lovelace") == (
        "https://www.bing.com/images/search?q=Ada+Lovelace&form=HDRSC2&first=1"
    )
    assert get_engine("bing", "http://127.0.0.1:1").search_url("x").startswith("http://127.0.0.1:1/images/search?q=x")


def test_bing_parses_the_m_attribute_and_tolerates_junk() -> None:
    bing = BingEngine()
    assert bing.parse({"m": '{"murl": "https://a/b.jpg", "purl": "https://a/", "turl": "t"}'}) == (
        "https://a/b.jpg",
        "https://a/",
    )
    assert bing.parse({"m": None}) == (None, None)
    assert bing.parse(None) == (None, None)
    assert bing.parse({"m": "[1, 2]"}) == (None, None)
    seen: set[str] = set()
    assert bing._candidate("k", {"m": '{"murl": "broken'}, 0, "https://x/", seen) is None
    c = bing._candidate("k", {"m": '{"murl": "/i.jpg", "purl": "javascript:void(0)"}'}, 4, "https://x/p", seen)
    assert c == Candidate("k", "https://x/i.jpg", None, 4)


def test_an_engines_browsers_resolve_only_its_own_hosts() -> None:
    bing = get_engine("bing")
    assert bing.browser_args == (
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE www.bing.com, EXCLUDE bing.com, EXCLUDE *.bing.com, "
        "EXCLUDE *.bing.net",)
    demo = get_engine("demo", "http://10.77.0.1:28082")  # an IP literal is ruled like a name
    assert demo.browser_args == ("--blink-settings=imagesEnabled=false",
                                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 10.77.0.1")
    assert get_engine("demo", "http://demo-web:8080", block_third_party=False).browser_args == (
        "--blink-settings=imagesEnabled=false",)


def test_several_engines_make_one_fallback_engine_in_their_order() -> None:
    both = get_engine(" DuckDuckGo , bing", "http://127.0.0.1:9")
    assert isinstance(both, FallbackEngine) and isinstance(both, SearchEngine)
    assert both.name == "duckduckgo,bing" and [e.name for e in both.engines] == ["duckduckgo", "bing"]
    assert both.max_concurrency == 2 and both.search_url("x") == both.engines[0].search_url("x")
    # one browser for both: one rule resolving every engine's hosts
    assert both.browser_args == ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE duckduckgo.com, "
                                 "EXCLUDE *.duckduckgo.com, EXCLUDE bing.com, EXCLUDE *.bing.com, EXCLUDE *.bing.net",)
    assert get_engine("duckduckgo,bing", block_third_party=False).browser_args == ()
    with pytest.raises(ConfigError, match="names an engine twice"):
        get_engine("bing,Bing")
    with pytest.raises(ConfigError, match="unknown search engine"):
        get_engine("bing,gogle")


def test_zero_limit_yields_nothing_without_touching_the_browser() -> None:
    assert list(DemoEngine("http://127.0.0.1:9").collect(None, "x", 0)) == []  # type: ignore[arg-type]


# --------------------------------------------------------------------------- real browser


def _browser(page_load_timeout_s: float) -> Iterator[ManagedDriver]:
    browser = make_driver(page_load_timeout_s=page_load_timeout_s)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def driver() -> Iterator[ManagedDriver]:
    yield from _browser(15)


@pytest.mark.browser
def test_demo_collects_everything_in_rank_order(driver: ManagedDriver, search_site: SearchSite) -> None:
    engine = DemoEngine(search_site.base_url)
    found = list(engine.collect(driver, "Ada Lovelace", 100))
    expected = search_site.expected("Ada Lovelace")
    assert _rows(found) == expected  # absolute, http(s) only, repeats dropped, engine ranks kept
    assert len(found) == 20 and all(c.keyword == "Ada Lovelace" for c in found)
    assert [c.rank for c in found] == sorted(c.rank for c in found)
    assert {c.source_url.split("://")[0] for c in found} == {"http"}
    assert any(c.source_url.startswith("http://cdn.example.test/") for c in found)
    assert any(c.source_url.startswith(search_site.base_url + "/img/") for c in found)
    assert [offset for _, _, offset in search_site.api_calls] == [10, 20]  # loaded by scrolling, then #fs-end


@pytest.mark.browser
def test_demo_respects_the_limit(driver: ManagedDriver, search_site: SearchSite) -> None:
    engine = DemoEngine(search_site.base_url)
    found = list(engine.collect(driver, "Ada Lovelace", 7))
    assert _rows(found) == search_site.expected("Ada Lovelace")[:7]
    assert driver.execute_script("return window.scrollY") == 0  # the first page was enough: no scrolling
    found = list(engine.collect(driver, "Ada Lovelace", 12))
    assert _rows(found) == search_site.expected("Ada Lovelace")[:12]


@pytest.mark.browser
def test_demo_unknown_keyword_is_empty_at_once(driver: ManagedDriver, search_site: SearchSite) -> None:
    engine = DemoEngine(search_site.base_url, scroll_wait_s=5.0)
    started = time.monotonic()
    assert list(engine.collect(driver, "Nobody At All", 50)) == []
    assert time.monotonic() - started < 3.0  # the end marker, not the dry-round timeout


@pytest.mark.browser
def test_demo_without_end_marker_stops_when_dry(driver: ManagedDriver, search_site: SearchSite) -> None:
    search_site.no_end.add("Alan Turing")
    engine = DemoEngine(search_site.base_url, scroll_wait_s=0.5, dry_rounds=2)
    started = time.monotonic()
    found = list(engine.collect(driver, "Alan Turing", 100))
    elapsed = time.monotonic() - started
    assert _rows(found) == search_site.expected("Alan Turing")
    # two bounded waits (2 x 0.5 s) after the last page, not a loop: a loop never ends; 15 s leaves room for a
    # browser slowed by both cores being busy (6.4 s seen under a full parallel test run)
    assert elapsed < 15.0


@pytest.mark.browser
def test_the_demo_web_serves_its_results_to_every_adapter(driver: ManagedDriver, lfw_dev: Path) -> None:
    """The demo web in each engine's shape (`demoweb.shapes`): the bing adapter reads the same results, in the
    same order, as the demo adapter reads from its own shape; google and duckduckgo read their own lists (the same
    photos, copied), each as the demo web's truth for that engine says."""
    name = "Abdullah Gul"
    with DemoWeb(lfw_dev, page_size=10) as web:
        demo = list(DemoEngine(web.url).collect(driver, name, 25))
        bing = list(BingEngine(web.url, scroll_wait_s=0.5, dry_rounds=2).collect(driver, name, 25))
        google = list(GoogleEngine(web.url).collect(driver, name, 25))
        ddg = list(DuckDuckGoEngine(web.url).collect(driver, name, 25))

        def shown(engine: str) -> list[str]:
            return [urljoin(web.url + "/", r["full"]) for r in truth(lfw_dev, name, engine=engine)][:25]

        assert len(demo) == 25 and _rows(bing) == _rows(demo)
        assert [c.source_url for c in demo] == shown("demo")
        assert [c.source_url for c in google] == shown("google")
        assert [c.source_url for c in ddg] == shown("duckduckgo")
    assert len({c.source_url for c in demo + google + ddg}) == 75  # three lists, no URL in two


@pytest.mark.browser
def test_bing_shape_with_consent_scrolling_and_see_more(driver: ManagedDriver, search_site: SearchSite) -> None:
    engine = BingEngine(search_site.base_url, scroll_wait_s=0.5, dry_rounds=2)
    found = list(engine.collect(driver, "Ada Lovelace", 100))
    assert _rows(found) == search_site.expected("Ada Lovelace")
    assert search_site.consents == 1
    # 10..19 came by scrolling; 20.. only after clicking "See more images".
    assert [first for _, _, first in search_site.api_calls] == [10, 20]
    assert search_site.hits[0].path == "/images/search"


@pytest.mark.browser
def test_bing_shape_limit_and_unknown_keyword(driver: ManagedDriver, search_site: SearchSite) -> None:
    engine = BingEngine(search_site.base_url, scroll_wait_s=0.5, dry_rounds=2)
    found = list(engine.collect(driver, "Katherine Johnson", 9))
    assert _rows(found) == search_site.expected("Katherine Johnson")[:9]
    started = time.monotonic()
    assert list(engine.collect(driver, "Nobody At All", 20)) == []
    assert time.monotonic() - started < 3.0


@pytest.mark.browser
def test_bing_end_hint_stops_without_waiting_for_dry_rounds(driver: ManagedDriver, search_site: SearchSite) -> None:
    engine = BingEngine(search_site.base_url, scroll_wait_s=6.0, dry_rounds=3)
    started = time.monotonic()
    found = list(engine.collect(driver, "Katherine Johnson", 100))
    assert _rows(found) == search_site.expected("Katherine Johnson")  # 10 on the page, 4 by scrolling
    assert time.monotonic() - started < 6.0  # data-isend="true", not two 6 s dry rounds


@pytest.fixture
def impatient_driver() -> Iterator[ManagedDriver]:
    yield from _browser(3)


@pytest.fixture
def patient_driver() -> Iterator[ManagedDriver]:
    # a page-load timeout long enough for the result page itself to render with every core busy
    # (make test runs two test processes), short enough to wait out the tracker that never answers
    yield from _browser(8)


@pytest.mark.browser
def test_a_page_load_timeout_keeps_a_loaded_result_list(patient_driver: ManagedDriver, search_site: SearchSite) -> None:
    """A tracker script that never comes holds the page 'loading': its results are harvested, the timeout noted."""
    search_site.stall.add("Ada Lovelace")
    notes: list[str] = []
    engine = BingEngine(search_site.base_url, scroll_wait_s=1.0, dry_rounds=2)
    found = list(engine.collect(patient_driver, "Ada Lovelace", 100, report=notes.append))
    assert _rows(found) == search_site.expected("Ada Lovelace")  # the first page, then scrolling and "more"
    assert len(notes) == 1 and notes[0].startswith("page_load_timeout: ") and "10 results" in notes[0]


@pytest.mark.browser
@pytest.mark.parametrize("shape", ["script data", "basic html"])
def test_google_reads_every_result_of_its_pages(driver: ManagedDriver, search_site: SearchSite, shape: str) -> None:
    if shape == "basic html":
        search_site.google_basic.update({"Ada Lovelace", "Grace Hopper"})
    engine = GoogleEngine(search_site.base_url)
    notes: list[str] = []
    found = list(engine.collect(driver, "Ada Lovelace", 100, report=notes.append))
    assert _rows(found) == search_site.expected("Ada Lovelace") and notes == []  # ranks, URLs, pages
    # page by page (start= the results seen so far), until a page brings nothing new
    assert [start for _, _, start in search_site.api_calls] == [0, 10, 20, 23]
    search_site.api_calls.clear()
    assert _rows(list(engine.collect(driver, "Ada Lovelace", 12))) == search_site.expected("Ada Lovelace")[:12]
    assert [start for _, _, start in search_site.api_calls] == [0, 10]
    assert _rows(list(engine.collect(driver, "Grace Hopper", 100))) == search_site.expected("Grace Hopper")


@pytest.mark.browser
def test_every_page_an_engine_loads_waits_its_turn(driver: ManagedDriver, search_site: SearchSite) -> None:
    """Politeness per engine: Google's four pages of one keyword, and DuckDuckGo's page and i.js pages, come
    at least the interval apart (a lower bound: a busy machine only spaces them more)."""
    google = paced(GoogleEngine(search_site.base_url), 0.4)
    assert len(list(google.collect(driver, "Ada Lovelace", 100))) == len(search_site.expected("Ada Lovelace"))
    loads = [hit.at for hit in search_site.hits]  # when each request reached the site
    # the first navigation of a browser reaches the site late (its own start-up), so its gap says nothing;
    # the later ones leave on their turn: unpaced, they follow each other within about 0.1 s
    assert len(loads) == 4 and all(b - a >= 0.35 for a, b in itertools.pairwise(loads[1:]))
    both = paced(get_engine("duckduckgo,bing", search_site.base_url), 0.4)
    assert isinstance(both, FallbackEngine) and {e.page_interval_s for e in both.engines} == {0.4}
    search_site.api_calls.clear()
    started = time.monotonic()
    assert len(list(both.collect(driver, "Ada Lovelace", 100))) == len(search_site.expected("Ada Lovelace"))
    # DuckDuckGo's search page and its three i.js pages: four turns, three intervals at least; bing adds none
    assert time.monotonic() - started >= 3 * 0.39


@pytest.mark.browser
@pytest.mark.parametrize(("kind", "note"), [
    ("consent", "consent: Google's consent page stayed after accepting it"),
    ("captcha", "captcha: Google's bot check (its sorry page)"),
    ("update", "unsupported_page: Google's 'update your browser' page"),
    ("shell", "unsupported_page: a page that needs JavaScript and holds no result"),
])
def test_google_blocks_are_notes_not_empty_successes(driver: ManagedDriver, search_site: SearchSite, kind: str,
                                                     note: str) -> None:
    search_site.google_blocks["Alan Turing"] = kind
    notes: list[str] = []
    assert list(GoogleEngine(search_site.base_url).collect(driver, "Alan Turing", 10, report=notes.append)) == []
    assert notes == [note]


@pytest.mark.browser
def test_duckduckgo_reads_every_page_of_i_js_with_the_pages_token(driver: ManagedDriver,
                                                                   search_site: SearchSite) -> None:
    engine = DuckDuckGoEngine(search_site.base_url)
    notes: list[str] = []
    found = list(engine.collect(driver, "Ada Lovelace", 100, report=notes.append))
    assert _rows(found) == search_site.expected("Ada Lovelace") and notes == []  # ranks, URLs, repeats dropped
    # the page's own script asks for the first page as well; the adapter asked for every page, following `next`
    assert sorted(offset for _, _, offset in search_site.api_calls) == [0, 0, 10, 20]
    assert search_site.hits[0].path == "/" and search_site.hits[0].keyword == "Ada Lovelace"
    search_site.api_calls.clear()
    assert _rows(list(engine.collect(driver, "Ada Lovelace", 12))) == search_site.expected("Ada Lovelace")[:12]
    assert sorted(offset for _, _, offset in search_site.api_calls) == [0, 0, 10]  # no page past the limit
    assert list(engine.collect(driver, "Nobody At All", 10, report=notes.append)) == [] and notes == []


@pytest.mark.browser
def test_duckduckgo_bot_check_and_refusal_are_notes_not_empty_successes(driver: ManagedDriver,
                                                                         search_site: SearchSite) -> None:
    engine = DuckDuckGoEngine(search_site.base_url)
    search_site.ddg_challenge.add("Alan Turing")
    search_site.ddg_refused.add("Grace Hopper")
    notes: list[str] = []
    assert list(engine.collect(driver, "Alan Turing", 10, report=notes.append)) == []
    assert list(engine.collect(driver, "Grace Hopper", 10, report=notes.append)) == []
    assert notes == ["blocked: a bot check (the anomaly page)", "blocked: i.js answered 403"]
    search_site.ddg_shell.add("Katherine Johnson")  # the page changed: no token where the adapter looks
    notes.clear()
    assert list(engine.collect(driver, "Katherine Johnson", 5, report=notes.append)) == []
    assert notes == ["unsupported_page: no vqd token on the search page"]


@pytest.mark.browser
def test_a_third_party_script_that_never_answers_does_not_hold_the_result_list(search_site: SearchSite) -> None:
    """A parser-blocking tracker from another host in the head: with every host resolved the page never parses
    (an empty page at the timeout, on every retry); with the engine's own browser flags it fails at once."""
    search_site.third_party.add("Ada Lovelace")
    engine = BingEngine(search_site.base_url, scroll_wait_s=1.0, dry_rounds=2)
    unblocked = make_driver(page_load_timeout_s=4, extra_args=replace(engine, block_third_party=False).browser_args)
    try:
        with pytest.raises(TimeoutException):
            list(replace(engine, block_third_party=False).collect(unblocked, "Ada Lovelace", 100))
        assert unblocked.execute_script("return document.querySelectorAll('a.iusc').length") == 0
    finally:
        unblocked.quit()
    browser = make_driver(page_load_timeout_s=4, extra_args=engine.browser_args)  # as the browser pool starts it
    try:
        notes: list[str] = []
        started = time.monotonic()
        found = list(engine.collect(browser, "Ada Lovelace", 100, report=notes.append))
        assert _rows(found) == search_site.expected("Ada Lovelace") and notes == []  # loaded, not harvested
        assert time.monotonic() - started < 15
    finally:
        browser.quit()


@pytest.mark.browser
def test_a_page_that_never_comes_is_still_a_timeout(impatient_driver: ManagedDriver, search_site: SearchSite) -> None:
    """No result list to harvest: the timeout reaches the browser pool, which retries the keyword.

    Chromium 156's chromedriver answers the navigation with its page-load timeout most times,
    but about one time in three it answers nothing until the client's own command timeout
    (page load + 15 s) gives up: a timeout of urllib3's. The pool counts both as a timeout
    (`scraper.browser._TIMEOUT_ERRORS`).
    """
    import urllib3.exceptions
    from selenium.common.exceptions import TimeoutException

    search_site.hang.add("Hang Person")
    notes: list[str] = []
    with pytest.raises((TimeoutException, urllib3.exceptions.TimeoutError)):
        list(BingEngine(search_site.base_url).collect(impatient_driver, "Hang Person", 10, report=notes.append))
    assert notes == []


@pytest.mark.browser
def test_demo_engine_on_the_real_demo_web(driver: ManagedDriver, lfw_dev: Path) -> None:
    """The adapter against the demo web itself: every result in rank order, as its ground truth says."""
    name = "Abdullah Gul"
    with DemoWeb(lfw_dev, hostile=True, page_size=10, max_results=45) as web:
        base = web.url
        found = list(DemoEngine(base).collect(driver, name, 1000))
        unknown = list(DemoEngine(base).collect(driver, "Nobody At All", 10))
    rows = truth(lfw_dev, name, hostile=True, max_results=45)
    assert len(rows) == 45
    assert _rows(found) == [(urljoin(base, r["full"]), urljoin(base, r["page"]), r["rank"]) for r in rows]
    assert unknown == []
