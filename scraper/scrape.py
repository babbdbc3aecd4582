"""A scrape run: search keywords with the browser pool, download with the downloader, commit RAW rows.

One identity is one keyword and one unit of work. Browsers only find URLs; downloads run
concurrently in the downloader while other keywords are still being searched. Keywords are
committed to the RAW run strictly in input order, whole keywords at a time in commits of about
``commit_rows`` rows (a small window of keywords downloads ahead),
and every decision that depends on what was seen before (``duplicate``, ``already_fetched``)
is taken at commit time against the committed history. So a run killed at any point and
started again commits exactly the rows an uninterrupted run would have (bar timestamps):
nothing is lost, nothing is stored twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from facescale.config import ScraperSettings
from facescale.errors import FacescaleError
from facescale.storage import Identity, IdentityRegistry, RawStore
from facescale.storage.erasures import ERASED, Blocklist
from facescale.storage.raw import EXHAUSTED

from .browser import BrowserPool, SearchResult, make_driver
from .candidates import Candidate
from .downloader import Downloader, DownloadLimits, FetchResult
from .engines import SearchEngine, paced
from .history import History

log = logging.getLogger(__name__)

#: Run-record ``meta`` key: keyword -> notes its search reported (``"<code>: <detail>"``).
SEARCH_NOTES = "search_notes"


@dataclass
class KeywordOutcome:
    """What one keyword produced (reported to progress callbacks)."""

    keyword: str
    candidates: int
    accepted: int
    rejected: Counter[str]
    error: str | None = None


@dataclass
class ScrapeSummary:
    run_id: str
    keywords: int = 0
    skipped: int = 0  # completed by an earlier attempt of this run
    failed: dict[str, str] = field(default_factory=dict)  # keyword -> why its search failed
    notes: dict[str, list[str]] = field(default_factory=dict)  # keyword -> what its search reported
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    finished: bool = False
    search_s: float = 0.0  # browser time spent searching this attempt's keywords (browsers run in parallel)
    download_s: float = 0.0  # time from each keyword's download submit to its last file (keywords overlap)


def scrape(
    names: Sequence[str],
    *,
    engine: SearchEngine,
    store: RawStore,
    registry: IdentityRegistry,
    run_id: str,
    settings: ScraperSettings,
    per_keyword: int | None = None,
    workers: int | None = None,
    on_keyword: Callable[[KeywordOutcome], None] | None = None,
    erased: Blocklist | None = None,
) -> ScrapeSummary:
    """Scrape ``names`` into RAW run ``run_id`` (resuming it if it was interrupted)."""
    if not names:
        raise FacescaleError("no keywords to scrape")
    per_keyword = per_keyword or settings.per_keyword
    workers = workers or settings.workers
    summary = ScrapeSummary(run_id, keywords=len(names))
    if store.exists(run_id) and store.get(run_id).finished:
        log.info("run %s already finished", run_id)
        return _count(store, summary, finished=True)
    engine = paced(engine, settings.politeness_delay_s)  # every page an engine loads, not only a keyword's first
    identities = [identity for identity, _ in registry.add(names)]
    history = History.load(store, erased=erased)
    driver_factory = partial(
        make_driver,
        settings.chromium_binary,
        settings.chromedriver,
        grid_url=settings.selenium_grid_url,
        page_load_timeout_s=settings.timeout_s,
        session_timeout_s=settings.grid_session_timeout_s,
        extra_args=getattr(engine, "browser_args", ()),
    )
    with store.open(run_id, meta={"engine": engine.name, "per_keyword": per_keyword}) as writer:
        todo = [i for i in identities if not writer.is_completed(i.slug)]
        summary.skipped = len(identities) - len(todo)
        with (
            Downloader(DownloadLimits.from_settings(settings)) as downloader,
            BrowserPool(
                engine,
                workers=workers,
                make_driver=driver_factory,
                politeness_delay_s=settings.politeness_delay_s,
                keyword_timeout_s=max(60.0, settings.timeout_s * 6),
            ) as pool,
        ):
            pending: list[str] = []  # keywords written but not yet committed
            pending_rows = 0
            # what the engine reported per keyword (e.g. a page-load timeout it recovered from),
            # kept in the run record across commits and resumed attempts
            notes: dict[str, list[str]] = dict(writer.record.meta.get(SEARCH_NOTES, {}))
            exhausted: list[str] = list(writer.record.meta.get(EXHAUSTED, []))
            for identity, result, fetched, download_s in _in_order(
                todo, pool, downloader, per_keyword, history, workers
            ):
                summary.search_s += result.seconds
                summary.download_s += download_s
                if result.notes:
                    notes[identity.name] = list(result.notes)
                    summary.notes[identity.name] = list(result.notes)
                if result.error is not None:
                    summary.failed[identity.name] = result.error
                    log.warning("search failed for %r: %s", identity.name, result.error)
                    if on_keyword:
                        on_keyword(KeywordOutcome(identity.name, 0, 0, Counter(), result.error))
                    continue
                if len(result.candidates) < per_keyword and not result.notes and identity.slug not in exhausted:
                    exhausted.append(identity.slug)
                rows = build_rows(identity, run_id, engine.name, result.candidates, fetched, history)
                writer.write(rows)
                pending.append(identity.slug)
                pending_rows += len(rows)
                if pending_rows >= settings.commit_rows:  # rows and their keywords become durable together
                    writer.commit(pending, meta={SEARCH_NOTES: notes, EXHAUSTED: exhausted})
                    pending, pending_rows = [], 0
                if on_keyword:
                    outcome = Counter(r["error"] for r in rows if r["error"])
                    accepted = sum(1 for r in rows if r["error"] is None)
                    on_keyword(KeywordOutcome(identity.name, len(rows), accepted, outcome))
        record = writer.commit(pending, finished=not summary.failed, meta={SEARCH_NOTES: notes, EXHAUSTED: exhausted})
    return _count(store, summary, finished=record.finished)


def _in_order(
    todo: list[Identity],
    pool: BrowserPool,
    downloader: Downloader,
    per_keyword: int,
    history: History,
    window: int,
) -> Iterator[tuple[Identity, SearchResult, dict[str, FetchResult], float]]:
    """Search everything, download a window ahead, and yield keywords in input order.

    Each keyword comes with its search result, its downloads by URL and the seconds from
    submitting them to the last one's end.
    """
    results: queue.Queue[SearchResult | BaseException | None] = queue.Queue()
    stop = threading.Event()

    def feed() -> None:
        try:
            for result in pool.search([i.name for i in todo], per_keyword):
                if stop.is_set():
                    return
                results.put(result)
            results.put(None)
        except BaseException as exc:  # handed to the consumer, which re-raises
            results.put(exc)

    feeder = threading.Thread(target=feed, name="facescale-search-feed", daemon=True)
    feeder.start()
    searched: dict[str, SearchResult] = {}
    downloads: dict[str, Future[list[FetchResult]]] = {}
    spans: dict[str, list[float]] = {}  # keyword -> [submitted, done]
    ahead = max(2, window + 1)
    try:
        for index, identity in enumerate(todo):
            while True:
                for later in todo[index : index + ahead]:
                    found = searched.get(later.name)
                    if found is not None and later.name not in downloads and found.error is None:
                        urls = [c.source_url for c in found.candidates if not history.fetched(c.source_url)]
                        downloads[later.name] = downloader.submit(urls)
                        span = spans[later.name] = [time.monotonic(), 0.0]
                        downloads[later.name].add_done_callback(partial(_end, span))
                if identity.name in searched:
                    break
                item = results.get()
                if item is None:
                    raise FacescaleError(f"search finished without a result for {identity.name!r}")
                if isinstance(item, BaseException):
                    raise item
                searched[item.keyword] = item
            result = searched.pop(identity.name)
            future = downloads.pop(identity.name, None)
            fetched = {r.url: r for r in future.result()} if future is not None else {}
            span = spans.pop(identity.name, [0.0, 0.0])
            yield identity, result, fetched, ((span[1] or time.monotonic()) - span[0]) if span[0] else 0.0
    finally:
        stop.set()
        for future in downloads.values():
            future.cancel()


def _end(span: list[float], _: object) -> None:
    span[1] = time.monotonic()


def build_rows(
    identity: Identity,
    run_id: str,
    engine: str,
    candidates: Sequence[Candidate],
    fetched: dict[str, FetchResult],
    history: History,
) -> list[dict[str, Any]]:
    """RAW rows for one keyword, in rank order; updates ``history`` as it goes."""
    rows = []
    for candidate in candidates:
        row: dict[str, Any] = {
            "run_id": run_id,
            "identity": identity.name,
            "identity_slug": identity.slug,
            "keyword": candidate.keyword,
            "engine": candidate.engine or engine,
            "source_url": candidate.source_url,
            "page_url": candidate.page_url,
            "rank": candidate.rank,
        }
        result = fetched.get(candidate.source_url)
        if history.erased_url(candidate.source_url):  # an erasure's: never fetched, never stored again
            row.update(fetched_at=datetime.now(UTC), error=ERASED)
        elif result is None or history.fetched(candidate.source_url):
            row.update(fetched_at=datetime.now(UTC), error="already_fetched")
        else:
            error = result.error
            if error is None and history.erased_image(result.image_id):
                error = ERASED
            elif error is None and history.stored(result.image_id):
                error = "duplicate"
            row.update(
                image_id=result.image_id,
                fetched_at=result.fetched_at,
                http_status=result.http_status,
                content_type=result.content_type,
                image=result.data if error is None else None,
                width=result.width,
                height=result.height,
                error=error,
            )
        history.add_rows([row])
        rows.append(row)
    return rows


def _count(store: RawStore, summary: ScrapeSummary, finished: bool) -> ScrapeSummary:
    summary.finished = finished
    summary.accepted, rejected = store.verdicts([summary.run_id])
    summary.rejected.update(rejected)
    return summary
