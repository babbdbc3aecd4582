"""scrape(): real headless Chromium, the real demo web and the real downloader, end to end."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from facescale.config import ScraperSettings
from facescale.demoweb import HOSTILE_EXPECTED, DemoWeb, truth
from facescale.scraper.engines import get_engine
from facescale.scraper.keywords import parse_keywords
from facescale.scraper.scrape import scrape
from facescale.storage import IdentityRegistry, Location, RawStore, read_table

pytestmark = pytest.mark.browser

NAMES = ["Abdullah Gul", "Adam Sandler", "Alejandro Toledo"]  # 19, 4 and 39 photos
# For the kill test: enough keywords that a run is still busy when the first one commits.
MORE_NAMES = [*NAMES, "Amelie Mauresmo", "Arnold Schwarzenegger", "Bill Clinton", "Bill Gates"]
PER_KEYWORD = 14
SETTINGS = ScraperSettings(politeness_delay_s=0.0, timeout_s=5.0, retries=1, workers=2, max_body_bytes=5 * 2**20)


@pytest.fixture(scope="module")
def demo(lfw_dev: Path):
    with DemoWeb(lfw_dev, page_size=5) as site:  # small pages: the browser must scroll
        yield site


def _stores(root: Path) -> tuple[RawStore, IdentityRegistry]:
    location = Location.from_uri(str(root))
    return RawStore(location), IdentityRegistry(location)


def _rows(store: RawStore, run_id: str | None = None) -> list[dict[str, Any]]:
    return read_table(store.location, store.shard_paths([run_id] if run_id else None)).to_pylist()


def _comparable(rows: list[dict[str, Any]]) -> list[tuple]:
    """Rows without their timestamps, in a stable order."""
    keep = ("identity", "rank", "source_url", "page_url", "image_id", "error", "http_status", "width", "height")
    return sorted(tuple(r[k] for k in keep) for r in rows)


def test_scrape_collects_every_result_with_provenance_and_reasons(tmp_path: Path, demo: DemoWeb, lfw_dev: Path):
    store, registry = _stores(tmp_path / "store")
    summary = scrape(
        NAMES, engine=get_engine("demo", demo.url), store=store, registry=registry,
        run_id="night-1", settings=SETTINGS, per_keyword=PER_KEYWORD, workers=2,
    )  # fmt: skip
    assert summary.finished and not summary.failed
    assert len(store.get("night-1").shards) == 1  # whole keywords batched into commits of ~commit_rows
    rows = _rows(store)
    assert summary.accepted == sum(r["error"] is None for r in rows)
    for name in NAMES:
        expected = truth(lfw_dev, name)[:PER_KEYWORD]
        got = sorted((r for r in rows if r["identity"] == name), key=lambda r: r["rank"])
        assert [r["rank"] for r in got] == list(range(len(expected)))
        assert [r["source_url"] for r in got] == [urljoin(demo.url + "/", t["full"]) for t in expected]
        for row, true in zip(got, expected, strict=True):
            assert row["engine"] == "demo" and row["keyword"] == name and row["run_id"] == "night-1"
            assert row["page_url"] == urljoin(demo.url + "/", true["page"])
            kind = true["kind"]
            if kind == "corrupt":
                assert row["error"] == "corrupt" and row["image"] is None
            elif kind == "dup":
                assert row["error"] == "duplicate" and row["image"] is None and row["image_id"]
            elif kind == "other":  # another person's photo: new bytes, or a photo already stored
                assert row["error"] in (None, "duplicate")
            else:
                assert row["error"] is None, (kind, row["error"])
                assert hashlib.sha256(row["image"]).hexdigest() == row["image_id"]
                assert row["content_type"] == "image/jpeg" and row["http_status"] == 200
    accepted = [r["image_id"] for r in rows if r["error"] is None]
    assert len(accepted) == len(set(accepted)), "an image was stored twice"
    assert [i.slug for i in registry.list()] == ["abdullah-gul", "adam-sandler", "alejandro-toledo"]
    # the keywords whose result list ended before PER_KEYWORD: a deeper search would find nothing more
    slugs = {i.name: i.slug for i in registry.list()}
    ended = [slugs[n] for n in NAMES if len(truth(lfw_dev, n)) < PER_KEYWORD]
    assert store.get("night-1").meta["exhausted"] == ended
    assert summary.search_s > 0 and summary.download_s > 0

    # the same run again: nothing to do, nothing changes
    again = scrape(NAMES, engine=get_engine("demo", demo.url), store=store, registry=registry,
                   run_id="night-1", settings=SETTINGS, per_keyword=PER_KEYWORD)  # fmt: skip
    assert again.finished and _comparable(_rows(store)) == _comparable(rows)

    # the next night sees the same URLs: none is fetched again, no image is stored twice
    scrape(NAMES[:1], engine=get_engine("demo", demo.url), store=store, registry=registry,
           run_id="night-2", settings=SETTINGS, per_keyword=PER_KEYWORD)  # fmt: skip
    second = _rows(store, "night-2")
    assert second and {r["error"] for r in second} == {"already_fetched"}
    assert all(r["image"] is None and r["http_status"] is None for r in second)


def test_hostile_results_are_all_rejected_with_their_reason(tmp_path: Path, lfw_dev: Path):
    name = "Adam Sandler"
    expected = truth(lfw_dev, name, hostile=True)
    store, registry = _stores(tmp_path / "store")
    settings = SETTINGS.model_copy(update={"timeout_s": 2.0})
    with DemoWeb(lfw_dev, hostile=True, slow_seconds=30) as site:
        summary = scrape([name], engine=get_engine("demo", site.url), store=store, registry=registry,
                         run_id="hostile", settings=settings, per_keyword=len(expected))  # fmt: skip
    assert summary.finished
    rows = {r["rank"]: r for r in _rows(store)}
    assert len(rows) == len(expected)
    hostile = [t for t in expected if t["kind"].startswith("hostile-")]
    assert len(hostile) == len(HOSTILE_EXPECTED)
    for true in hostile:
        assert rows[true["rank"]]["error"] == HOSTILE_EXPECTED[true["kind"]], true["kind"]
    for row in rows.values():
        assert (row["image"] is None) == (row["error"] is not None)


def _cli(root: Path, base_url: str, run_id: str, names: list[str], engine: str = "demo") -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FACESCALE_STORAGE__ROOT": str(root),
        "FACESCALE_SCRAPER__POLITENESS_DELAY_S": "0",
        "FACESCALE_SCRAPER__TIMEOUT_S": "5",
        "FACESCALE_SCRAPER__COMMIT_ROWS": "1",  # commit after every keyword: many points to kill at
    }
    args = [sys.executable, "-m", "facescale.app.cli", "scrape", "--engine", engine, "--base-url", base_url,
            "--per-keyword", str(PER_KEYWORD), "--workers", "1", "--run-id", run_id]  # fmt: skip
    for name in names:
        args += ["--identity", name]
    return subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its Chromium processes, like a lost machine
    proc.wait()


def test_killed_run_resumes_to_the_same_rows(tmp_path: Path, demo: DemoWeb):
    reference_store, reference_registry = _stores(tmp_path / "reference")
    scrape(MORE_NAMES, engine=get_engine("demo", demo.url), store=reference_store, registry=reference_registry,
           run_id="r", settings=SETTINGS, per_keyword=PER_KEYWORD)  # fmt: skip
    reference = _comparable(_rows(reference_store))

    root = tmp_path / "killed"
    store, _ = _stores(root)
    run_json = root / "raw" / "r" / "run.json"
    # 1st kill: right after the first keyword is committed; 2nd: at an arbitrary moment.
    proc = _cli(root, demo.url, "r", MORE_NAMES)
    deadline = time.monotonic() + 120
    while not (run_json.exists() and store.get("r").completed) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.02)
    _kill_group(proc)
    assert len(store.get("r").completed) < len(MORE_NAMES)
    proc = _cli(root, demo.url, "r", MORE_NAMES)
    time.sleep(1.5)
    _kill_group(proc)
    proc = _cli(root, demo.url, "r", MORE_NAMES)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode() if proc.stderr else ""

    rows = _rows(store)
    assert store.get("r").finished
    assert len({(r["identity"], r["rank"]) for r in rows}) == len(rows), "duplicated rows"
    assert _comparable(rows) == reference


def test_a_killed_run_with_engine_fallback_resumes_to_the_same_rows(tmp_path: Path, search_site) -> None:
    """duckduckgo first, bing when it blocks: two people get DuckDuckGo's bot check and come from bing; the
    run records each row's engine and the block notes, and a run killed twice resumes to the same rows."""
    names = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Katherine Johnson"]
    search_site.ddg_challenge.update({"Alan Turing", "Katherine Johnson"})
    engine = "duckduckgo,bing"
    settings = ScraperSettings(politeness_delay_s=0.0, timeout_s=5.0, commit_rows=1, workers=1)  # as _cli's
    reference_store, reference_registry = _stores(tmp_path / "reference")
    summary = scrape(names, engine=get_engine(engine, search_site.base_url), store=reference_store,
                     registry=reference_registry, run_id="r", settings=settings, per_keyword=PER_KEYWORD)  # fmt: skip
    rows = _rows(reference_store)
    engines = {name: {r["engine"] for r in rows if r["identity"] == name} for name in names}
    assert engines == {"Ada Lovelace": {"duckduckgo"}, "Alan Turing": {"bing"}, "Grace Hopper": {"duckduckgo"},
                       "Katherine Johnson": {"bing"}}
    for name in names:  # every result each engine's page holds (Grace Hopper has fewer than asked: bing adds none)
        mine = sorted((r["source_url"], r["rank"]) for r in rows if r["identity"] == name)
        assert mine == sorted((url, rank) for url, _, rank in search_site.expected(name)[:PER_KEYWORD])
    assert summary.notes == {name: ["blocked: duckduckgo: a bot check (the anomaly page)"]
                             for name in ("Alan Turing", "Katherine Johnson")}
    assert reference_store.get("r").meta["engine"] == engine
    reference = _comparable(rows)

    root = tmp_path / "killed"
    store, _ = _stores(root)
    run_json = root / "raw" / "r" / "run.json"
    proc = _cli(root, search_site.base_url, "r", names, engine)
    deadline = time.monotonic() + 120
    while not (run_json.exists() and store.get("r").completed) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.02)
    _kill_group(proc)  # right after the first keyword is committed
    assert len(store.get("r").completed) < len(names)
    proc = _cli(root, search_site.base_url, "r", names, engine)
    time.sleep(2.0)
    _kill_group(proc)  # at an arbitrary moment
    proc = _cli(root, search_site.base_url, "r", names, engine)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode() if proc.stderr else ""
    resumed = _rows(store)
    assert store.get("r").finished
    assert _comparable(resumed) == reference
    assert sorted((r["identity"], r["rank"], r["engine"]) for r in resumed) == sorted(
        (r["identity"], r["rank"], r["engine"]) for r in rows)


def test_odd_keyword_files_are_handled_safely(tmp_path: Path, demo: DemoWeb):
    lines = [
        "", "  ", "# a comment", "Adam Sandler", "adam   SANDLER", "../../etc/passwd", "a/b\\c",
        "Zoë Ångström-Ñúñez", "北京 人", "🙂", "x" * 300, "ok\x00bad", "Adam Sandler",
    ]  # fmt: skip
    parsed = parse_keywords(lines)
    assert parsed.names == ["Adam Sandler", "../../etc/passwd", "a/b\\c", "Zoë Ångström-Ñúñez", "北京 人", "🙂"]
    assert [line for line, _ in parsed.rejected] == [11, 12]
    assert parsed.duplicates == 2

    keywords = tmp_path / "keywords.txt"
    keywords.write_text("\n".join(lines), encoding="utf-8")
    root = tmp_path / "store"
    env = {**os.environ, "FACESCALE_STORAGE__ROOT": str(root), "FACESCALE_SCRAPER__POLITENESS_DELAY_S": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "facescale.app.cli", "scrape", "--keywords", str(keywords), "--engine", "demo",
         "--base-url", demo.url, "--per-keyword", "3", "--workers", "2", "--run-id", "odd"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "skipped keyword on line 11" in result.stderr and "line 12" in result.stderr
    store, registry = _stores(root)
    rows = _rows(store)
    assert Counter(r["identity"] for r in rows) == Counter({"Adam Sandler": 3})  # the others find nothing
    slugs = [i.slug for i in registry.list()]
    assert len(slugs) == 6 and all("/" not in s and ".." not in s for s in slugs)
    outside = [p for p in tmp_path.rglob("*") if not (p == keywords or p.is_relative_to(root))]
    assert outside == [], "something was written outside the storage root"


def test_bing_page_that_never_finishes_loading_and_crawler_only_urls(tmp_path: Path, search_site) -> None:
    """A Bing-shaped page held 'loading' by a tracker that never comes still yields its results (the
    timeout is recorded in the run), and social networks' crawler endpoints (an HTML page, a 403, no
    answer at all) end as rejected rows with reasons without holding the keyword up."""
    from .conftest import LOOKASIDE

    search_site.stall.add("Lookaside Person")
    store, registry = _stores(tmp_path / "store")
    settings = ScraperSettings(politeness_delay_s=0.0, timeout_s=2.0, retries=0, workers=1)
    started = time.monotonic()
    summary = scrape(["Lookaside Person"], engine=get_engine("bing", search_site.base_url), store=store,
                     registry=registry, run_id="night-1", settings=settings, per_keyword=20)  # fmt: skip
    assert time.monotonic() - started < 60
    assert summary.finished and not summary.failed
    rows = {r["source_url"]: r for r in _rows(store)}
    assert set(rows) == {url for url, _, _ in search_site.expected("Lookaside Person")}
    crawler = [rows[urljoin(search_site.base_url + "/", path)] for path in LOOKASIDE.values()]
    assert all(r["image"] is None and r["error"] for r in crawler), [r["error"] for r in crawler]
    (note,) = store.get("night-1").meta["search_notes"]["Lookaside Person"]
    assert note.startswith("page_load_timeout: ")
    assert summary.notes == {"Lookaside Person": [note]}
