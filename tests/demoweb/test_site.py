"""The demo web over real HTTP (a DemoWeb subprocess) and real headless Chromium: results, truth, hostile URLs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import psutil
import pytest

from facescale.demoweb import HOSTILE_EXPECTED, TROUBLE_KINDS, DemoWeb, build_app, truth
from facescale.errors import NotFoundError
from facescale.scraper.imagecheck import check_image

MANY = "George W Bush"  # 530 photos: the list is capped by max_results
FEW = "Aaron Sorkin"  # 2 photos: every trouble kind still appears
MEDIUM = "Abdullah Gul"  # 19 photos


@pytest.fixture(scope="module")
def plain(lfw_dev: Path) -> Any:
    with DemoWeb(lfw_dev) as web:
        yield web


@pytest.fixture(scope="module")
def hostile(lfw_dev: Path) -> Any:
    with DemoWeb(lfw_dev, hostile=True, page_size=10, slow_seconds=1.0) as web:
        yield web


def _get(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body; HTTP errors are answers too (redirects are not followed)."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _json(url: str) -> Any:
    status, _, body = _get(url)
    assert status == 200, url
    return json.loads(body)


def _decode(data: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


class _Links(HTMLParser):
    """The result anchors of a results page, and whether #fs-end is there."""

    def __init__(self) -> None:
        super().__init__()
        self.results: list[dict[str, str]] = []
        self.end = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "a" and a.get("class") == "fs-result":
            self.results.append({"page": a["href"], "full": a["data-full"], "rank": a["data-rank"]})
        elif tag == "img" and self.results and "thumb" not in self.results[-1]:
            self.results[-1]["thumb"] = a["src"]
        elif a.get("id") == "fs-end":
            self.end = True


def _page(url: str) -> _Links:
    status, headers, body = _get(url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    links = _Links()
    links.feed(body.decode())
    return links


def _shown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: r[k] for k in ("full", "page", "thumb", "rank")} for r in rows]


# -- the result lists ------------------------------------------------------------------------


def test_names_match_case_spaces_and_underscores(lfw_dev: Path) -> None:
    expected = truth(lfw_dev, MANY)
    assert expected
    for spelling in ("george w bush", "George_W_Bush", "  GEORGE   w_BUSH "):
        assert truth(lfw_dev, spelling) == expected
    assert truth(lfw_dev, "Nobody At All") == []
    assert truth(lfw_dev, "") == []


def test_result_lists_mix_real_photos_with_every_kind_of_trouble(lfw_dev: Path) -> None:
    many = truth(lfw_dev, MANY)
    assert len(many) == 120 and [r["rank"] for r in many] == list(range(120))
    kinds = Counter(r["kind"] for r in many)
    assert kinds["orig"] > len(many) / 2 and all(kinds[k] >= 5 for k in TROUBLE_KINDS)
    assert many[0]["kind"] == "orig"
    assert len({r["full"] for r in many}) == len(many)
    origs = [r["sources"][0] for r in many if r["kind"] == "orig"]
    assert len(set(origs)) == len(origs)  # no photo is listed twice as an original

    few = truth(lfw_dev, FEW)  # 2 photos: stop when they run out, but show every trouble
    assert sorted(r["kind"] for r in few) == sorted(["orig", "orig", *TROUBLE_KINDS])
    assert truth(lfw_dev, MANY, max_results=30) == many[:30]  # a shorter list is a prefix


def test_truth_describes_what_each_result_shows(lfw_dev: Path) -> None:
    for row in truth(lfw_dev, MEDIUM):
        kind, faces = row["kind"], row["faces"]
        assert len(faces) == len(row["identities"]) == {"pair": 2, "noface": 0, "corrupt": 0}.get(kind, 1)
        if kind == "noface":
            assert row["identity"] is None and row["sources"] == []
        elif kind == "other":
            assert row["identity"] != MEDIUM and row["identities"] == [row["identity"]]
        else:
            assert row["identity"] == MEDIUM
        if kind == "pair":
            assert MEDIUM in row["identities"] and len(set(row["identities"])) == 2
        if kind == "orig":
            assert faces == [[68, 67, 116, 116]]


def test_hostile_lists_add_each_hostile_url_once(lfw_dev: Path) -> None:
    plain_rows = truth(lfw_dev, MEDIUM)
    rows = truth(lfw_dev, MEDIUM, hostile=True)
    hostile_rows = [r for r in rows if r["kind"].startswith("hostile-")]
    assert sorted(r["kind"] for r in hostile_rows) == sorted(HOSTILE_EXPECTED)
    kept = [r for r in rows if not r["kind"].startswith("hostile-")]  # the same results, moved down
    assert [{**r, "rank": k["rank"]} for r, k in zip(plain_rows, kept, strict=True)] == kept
    assert rows[0]["kind"] == "orig"
    other_person = {r["full"] for r in truth(lfw_dev, FEW, hostile=True)}
    assert not {r["full"] for r in hostile_rows} & other_person  # hostile URLs are unique per query
    assert truth(lfw_dev, FEW, hostile=True, max_results=10)[0]["kind"] == "orig"


def test_build_app_validates_its_arguments(tmp_path: Path, lfw_dev: Path) -> None:
    with pytest.raises(NotFoundError):
        build_app(tmp_path / "missing")
    with pytest.raises(ValueError):
        build_app(lfw_dev, page_size=0)
    with pytest.raises(NotFoundError):
        DemoWeb(tmp_path / "missing").start()


# -- the site over HTTP ----------------------------------------------------------------------


def test_results_page_and_api_agree_with_truth(plain: DemoWeb, lfw_dev: Path) -> None:
    expected = truth(lfw_dev, MANY)
    first = _page(f"{plain.url}/search?q=george_w_bush")
    assert first.results == [{**r, "rank": str(r["rank"])} for r in _shown(expected[:20])]
    assert not first.end

    collected: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = _json(f"{plain.url}/api/results?q=George%20W%20Bush&offset={offset}")
        assert len(page["results"]) <= 20
        collected += page["results"]
        offset = page["next"]
    assert _shown(collected) == _shown(expected)
    assert _json(f"{plain.url}/api/truth?q=GEORGE+W+BUSH") == expected

    few = _page(f"{plain.url}/search?q={FEW.replace(' ', '+')}")
    assert len(few.results) == len(truth(lfw_dev, FEW)) and few.end  # everything fits on one page
    assert _get(f"{plain.url}/api/results?q=x&offset=-1")[0] == 400


def test_unknown_names_have_no_results(plain: DemoWeb) -> None:
    page = _page(f"{plain.url}/search?q=Nobody+At+All")
    assert page.results == [] and page.end
    assert _json(f"{plain.url}/api/results?q=Nobody+At+All&offset=0") == {"results": [], "next": None}
    assert _json(f"{plain.url}/api/truth?q=Nobody+At+All") == []
    status, _, body = _get(plain.url + "/")
    assert status == 200 and b'action="/search"' in body and b'name="q"' in body
    assert _get(f"{plain.url}/img/{'a' * 32}.jpg")[0] == 404  # not a token this site issued


def _fetch(url: str) -> bytes:
    status, headers, body = _get(url)
    assert status == 200 and headers["Content-Length"] == str(len(body)), url
    assert headers["Content-Type"] == "image/jpeg", url
    return body


def _crop(img: np.ndarray, box: list[int], side: int = 64) -> np.ndarray:
    x, y, w, h = box
    return cv2.resize(img[y : y + h, x : x + w], (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)


def test_every_kind_decodes_as_expected(plain: DemoWeb, lfw_dev: Path) -> None:
    rows = truth(lfw_dev, MANY, max_results=40)
    bodies = {r["rank"]: _fetch(plain.url + r["full"]) for r in rows}
    seen = set()
    for row in rows:
        body, kind = bodies[row["rank"]], row["kind"]
        seen.add(kind)
        sources = [(lfw_dev / s).read_bytes() for s in row["sources"]]
        img = _decode(body)
        if kind == "corrupt":
            assert img is None and check_image(body).error == "corrupt"
            assert sources[0].startswith(body) and len(body) < len(sources[0])
            continue
        assert img is not None, kind
        height, width = img.shape[:2]
        if kind in ("orig", "dup", "other"):
            assert body == sources[0]  # the very file: an exact duplicate for dup
        elif kind == "resized":
            assert body != sources[0] and (width, height) != (250, 250)
            back = cv2.resize(img, (250, 250), interpolation=cv2.INTER_AREA).astype(np.float32)
            assert np.abs(back - _decode(sources[0]).astype(np.float32)).mean() < 8  # the same picture
        elif kind == "scene":
            assert (width, height) in {(640, 480), (800, 600), (480, 640)}
        elif kind == "noface":
            assert row["faces"] == [] and min(width, height) >= 480
        for box, source in zip(row["faces"], sources, strict=False):  # the face really is where truth says
            x, y, w, h = box
            assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
            assert np.abs(_crop(img, box) - _crop(_decode(source), [68, 67, 116, 116])).mean() < 12, kind
    assert seen == {"orig", *TROUBLE_KINDS}
    dups = [r for r in rows if r["kind"] == "dup"]
    listed = {bodies[r["rank"]] for r in rows if r["kind"] == "orig"}
    assert dups and all(bodies[r["rank"]] in listed for r in dups)  # a dup repeats a listed original

    for row in rows[:12]:
        thumb = _decode(_fetch(plain.url + row["thumb"]))
        assert thumb is not None and max(thumb.shape[:2]) <= 160
        status, _, page = _get(plain.url + row["page"])
        assert status == 200 and row["full"].encode() in page


def test_same_seed_same_tokens_and_bytes(plain: DemoWeb, lfw_dev: Path) -> None:
    rows = truth(lfw_dev, MEDIUM)
    picked = {r["kind"]: r for r in rows}  # one of each kind
    with DemoWeb(lfw_dev, seed=0) as again:
        assert _json(f"{again.url}/api/truth?q={MEDIUM.replace(' ', '+')}") == rows
        for row in picked.values():
            assert _get(again.url + row["full"])[2] == _get(plain.url + row["full"])[2], row["kind"]
    other_seed = truth(lfw_dev, MEDIUM, seed=1)
    assert {r["full"] for r in other_seed}.isdisjoint(r["full"] for r in rows)
    status, _, _ = _get(plain.url + other_seed[0]["full"])
    assert status == 404  # tokens are bound to the seed


def test_many_concurrent_downloads(plain: DemoWeb, lfw_dev: Path) -> None:
    urls = [plain.url + r["full"] for r in truth(lfw_dev, MANY) if r["kind"] != "corrupt"] * 3

    async def download() -> list[tuple[int, int, int]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def one(url: str) -> tuple[int, int, int]:
                async with session.get(url) as resp:
                    body = await resp.read()
                    return resp.status, resp.content_length or -1, len(body)

            return await asyncio.gather(*(one(u) for u in urls))

    answers = asyncio.run(download())
    assert all(status == 200 and length == size for status, length, size in answers)


# -- hostile URLs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_urls(hostile: DemoWeb, lfw_dev: Path) -> dict[str, str]:
    rows = _json(f"{hostile.url}/api/truth?q={MEDIUM.replace(' ', '+')}")
    assert rows == truth(lfw_dev, MEDIUM, hostile=True)
    return {
        r["kind"].removeprefix("hostile-"): hostile.url + r["full"] for r in rows if r["kind"].startswith("hostile-")
    }


def test_hostile_status_codes(hostile_urls: dict[str, str]) -> None:
    assert _get(hostile_urls["404"])[0] == 404
    assert _get(hostile_urls["500"])[0] == 500 and _get(hostile_urls["500"])[0] == 500

    status, headers, _ = _get(hostile_urls["redirect-loop"])
    assert status == 302
    hop = urllib.parse.urljoin(hostile_urls["redirect-loop"], headers["Location"])
    status, headers, _ = _get(hop)
    assert status == 302 and urllib.parse.urljoin(hop, headers["Location"]) == hostile_urls["redirect-loop"]

    async def follow() -> None:
        async with aiohttp.ClientSession() as session:
            await session.get(hostile_urls["redirect-loop"], max_redirects=10)

    with pytest.raises(aiohttp.TooManyRedirects):
        asyncio.run(follow())


def test_flaky_fails_once_per_url(hostile_urls: dict[str, str]) -> None:
    url = hostile_urls["flaky"]
    assert _get(url)[0] == 503
    status, _, body = _get(url)
    assert status == 200 and check_image(body).ok
    assert _get(url + "&again=1")[0] == 503  # another URL: fails once too


def test_bodies_that_are_not_usable_images(hostile_urls: dict[str, str]) -> None:
    status, headers, body = _get(hostile_urls["html"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body.lstrip().startswith(b"<!doctype html")
    assert check_image(body).error == "not_an_image"

    status, _, body = _get(hostile_urls["truncated"])
    assert status == 200 and _decode(body) is None and check_image(body).error == "corrupt"

    status, headers, body = _get(hostile_urls["empty"])
    assert status == 200 and headers["Content-Length"] == "0" and body == b""

    status, headers, body = _get(hostile_urls["wrong-type"])
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert _decode(body).shape == (250, 250, 3) and check_image(body).ok  # sniffed: a real JPEG

    status, headers, body = _get(hostile_urls["noai"])
    assert status == 200 and headers["X-Robots-Tag"] == "noai, noimageai" and check_image(body).ok


def test_bomb_is_a_valid_small_20000px_png(hostile_urls: dict[str, str]) -> None:
    status, headers, body = _get(hostile_urls["bomb"])
    assert status == 200 and headers["Content-Type"] == "image/png" and len(body) < 200_000
    assert check_image(body).error == "too_many_pixels"
    width, height, depth = struct.unpack(">IIB", body[16:25])
    assert (width, height, depth) == (20_000, 20_000, 1)
    pos, idat = 8, []
    while pos < len(body):  # every chunk's CRC is right
        (length,) = struct.unpack(">I", body[pos : pos + 4])
        kind, data = body[pos + 4 : pos + 8], body[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", body[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + data)
        if kind == b"IDAT":
            idat.append(data)
        pos += 12 + length
    inflater, total, stream = zlib.decompressobj(), 0, b"".join(idat)
    for start in range(0, len(stream), 4096):
        total += len(inflater.decompress(stream[start : start + 4096]))
    total += len(inflater.flush())
    assert inflater.eof and total == height * (1 + width // 8)


def test_huge_streams_100mb_with_content_length(hostile: DemoWeb, hostile_urls: dict[str, str]) -> None:
    server = psutil.Process(hostile.pid)
    before = server.memory_info().rss
    with urllib.request.urlopen(hostile_urls["huge"], timeout=10) as resp:
        assert resp.headers["Content-Length"] == str(100 * 1024 * 1024)
        total = 0
        while chunk := resp.read(1 << 20):
            total += len(chunk)
    assert total == 100 * 1024 * 1024
    assert server.memory_info().rss - before < 40 * 1024 * 1024  # streamed, never held at once


def test_endless_never_ends_and_blocks_nobody(hostile: DemoWeb, hostile_urls: dict[str, str]) -> None:
    with urllib.request.urlopen(hostile_urls["endless"], timeout=10) as resp:
        assert resp.headers.get("Content-Length") is None and resp.headers["Transfer-Encoding"] == "chunked"
        for _ in range(4):
            assert len(resp.read(1 << 20)) == 1 << 20
        started = time.monotonic()
        assert _get(f"{hostile.url}/search?q=x")[0] == 200
        assert time.monotonic() - started < 2
    time.sleep(0.3)  # the server notices the closed connection and stops writing
    server = psutil.Process(hostile.pid)
    server.cpu_percent()
    time.sleep(0.5)
    assert server.cpu_percent() < 50


def test_slow_waits_without_blocking_others(hostile: DemoWeb, hostile_urls: dict[str, str]) -> None:
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        urllib.request.urlopen(hostile_urls["slow"], timeout=0.3).read()

    answer: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: answer.update(result=_get(hostile_urls["slow"])))
    started = time.monotonic()
    waiter.start()
    assert _get(f"{hostile.url}/")[0] == 200 and waiter.is_alive()  # answered while the slow one still waits
    waiter.join(10)
    status, _, body = answer["result"]
    assert status == 200 and check_image(body).ok and time.monotonic() - started >= 1.0


# -- the real browser ------------------------------------------------------------------------


@pytest.mark.browser
def test_headless_chromium_scrolls_to_the_end(hostile: DemoWeb, lfw_dev: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1024,768",
    ):  # fmt: skip
        options.add_argument(flag)
    expected = truth(lfw_dev, MANY, hostile=True)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(f"{hostile.url}/search?q={MANY.replace(' ', '+')}")

        def count() -> int:
            return len(driver.find_elements(By.CSS_SELECTOR, "#results a.fs-result"))

        time.sleep(1.0)  # without scrolling, only what fills the window gets loaded
        assert 10 <= count() < len(expected) and not driver.find_elements(By.ID, "fs-end")
        deadline = time.monotonic() + 40
        while not driver.find_elements(By.ID, "fs-end"):
            assert time.monotonic() < deadline, f"stuck at {count()} results"
            before = count()
            driver.execute_script("window.scrollTo(0, document.documentElement.scrollHeight);")
            with contextlib.suppress(Exception):
                WebDriverWait(driver, 5, poll_frequency=0.05).until(
                    lambda d, before=before: count() > before or d.find_elements(By.ID, "fs-end")
                )
        anchors = driver.find_elements(By.CSS_SELECTOR, "#results a.fs-result")
        found = [(a.get_attribute("data-full"), int(a.get_attribute("data-rank"))) for a in anchors]
        assert found == [(r["full"], r["rank"]) for r in expected]
        assert driver.find_element(By.ID, "fs-end").text == "No more results"
        thumbs = driver.execute_script(
            "return [...document.querySelectorAll('#results img')].filter(i => i.complete && i.naturalWidth > 0).length"
        )
        assert thumbs > 0
    finally:
        driver.quit()


# -- process hygiene -------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_demoweb_leaves_no_process_behind(lfw_dev: Path) -> None:
    web = DemoWeb(lfw_dev, max_results=5)
    with web:
        pid = web.pid
        assert pid is not None and web.url.startswith("http://127.0.0.1:") and not web.url.endswith("/")
        assert _get(web.url + "/")[0] == 200
    assert pid is not None and _gone(pid) and web.pid is None
    with pytest.raises(RuntimeError):
        _ = web.url
    web.stop()  # idempotent

    # A parent that dies without cleaning up closes the server's stdin: the server exits too.
    proc = subprocess.Popen(web.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and re.match(r"listening on http://127\.0\.0\.1:\d+$", proc.stdout.readline())
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# -- other engines' pages: copies of the same photos ------------------------------------------


def test_google_and_duckduckgo_list_other_sites_copies_of_the_same_photos(plain: DemoWeb, lfw_dev: Path) -> None:
    """Each copy engine lists the person's photos in an order of its own, at URLs of its own, as copies (another
    size, a border cut off, a watermark, a re-encode) whose faces are where its truth says."""
    demo = truth(lfw_dev, MEDIUM)
    demo_sources = Counter(r["sources"][0] for r in demo if r["kind"] == "orig")
    for engine in ("google", "duckduckgo"):
        rows = truth(lfw_dev, MEDIUM, engine=engine)
        assert {r["full"] for r in rows}.isdisjoint(r["full"] for r in demo)
        assert Counter(r["sources"][0] for r in rows if r["kind"] == "orig") == demo_sources  # the same photos
        assert [r["sources"] for r in rows] != [r["sources"] for r in demo]  # in another order
        assert _json(f"{plain.url}/api/truth?q={MEDIUM.replace(' ', '+')}&engine={engine}") == rows
        for row in rows:
            if row["kind"] not in ("orig", "scene", "resized") or not row["known"]:
                continue
            body = _fetch(plain.url + row["full"])
            source = (lfw_dev / row["sources"][0]).read_bytes()
            assert body != source
            img = _decode(body)
            assert img is not None
            height, width = img.shape[:2]
            for box in row["faces"]:
                x, y, w, h = box
                assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
                assert np.abs(_crop(img, box) - _crop(_decode(source), [68, 67, 116, 116])).mean() < 14, engine
    assert _get(f"{plain.url}/api/truth?q=x&engine=yahoo")[0] == 400
    with pytest.raises(ValueError, match="yahoo"):
        truth(lfw_dev, MEDIUM, engine="yahoo")


def test_google_and_duckduckgo_pages_carry_their_lists(plain: DemoWeb, lfw_dev: Path) -> None:
    """Google's script data and DuckDuckGo's i.js (with the page's vqd token, 403 without) hold each engine's list."""
    q = MEDIUM.replace(" ", "+")
    google = truth(lfw_dev, MEDIUM, engine="google")
    status, _, body = _get(f"{plain.url}/search?q={q}&tbm=isch&start=20")
    assert status == 200 and b"AF_initDataCallback" in body
    assert all(json.dumps(r["full"]).encode()[1:-1] in body for r in google[20:40])
    assert json.dumps(google[0]["full"]).encode()[1:-1] not in body  # page 2 only

    ddg = truth(lfw_dev, MEDIUM, engine="duckduckgo")
    status, _, page = _get(f"{plain.url}/?q={q}&iax=images&ia=images")
    token = re.search(rb"vqd=['\"]?([\w-]+)", page)
    assert status == 200 and token is not None
    answer = _json(f"{plain.url}/i.js?l=us-en&o=json&q={q}&vqd={token.group(1).decode()}&s=0")
    assert [r["image"] for r in answer["results"]] == [r["full"] for r in ddg[: len(answer["results"])]]
    assert _get(f"{plain.url}/i.js?q={q}&vqd=wrong&s=0")[0] == 403
