"""Search path: candidate URLs/s of the browser pool against the demo web with 1, 2 and 4 workers, in one run.

Starts the demo web in a subprocess and warms it (every search page and thumbnail of the
keywords is fetched once, so no run pays for the server rendering thumbnails), then for each
worker count W: builds a ``BrowserPool`` over ``get_engine("demo", url)`` with
``politeness_delay_s=0``, starts its W headless Chromium browsers by searching W keywords
(timed and printed as start-up, *excluded* from the rate), then times
``pool.search(NAMES, per_keyword)`` over the fixed keyword list. Prints candidate URLs/s,
per-worker URLs/s and the scaling ratio against the 1-worker run (best of ``--repeat``).
Also prints the CPU seconds per keyword used by the run's process tree and how busy the
machine's CPUs were: on a small machine the browsers saturate the CPUs well before the pool
runs out of parallelism. Every run must find the same number of candidates (exit status 1
otherwise). Run:

    .venv/bin/python bench/bench_search.py [--workers 1 2 4] [--per-keyword 60] [--keywords 24]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from functools import partial
from pathlib import Path
from urllib.parse import urljoin

import psutil
from selenium.webdriver.remote.webdriver import WebDriver

from facescale.demoweb import DemoWeb, truth
from facescale.scraper.browser import BrowserPool, DriverFactory, make_driver
from facescale.scraper.downloader import Downloader, DownloadLimits
from facescale.scraper.engines import SearchEngine, get_engine

REPO = Path(__file__).resolve().parents[1]
# The 24 people of lfw-dev with the most photos (21 to 530; 42 to 120 demo-web results each).
NAMES = [
    "George W Bush", "Colin Powell", "Tony Blair", "Donald Rumsfeld", "Jacques Chirac", "Vladimir Putin",
    "Luiz Inacio Lula da Silva", "Gloria Macapagal Arroyo", "Arnold Schwarzenegger", "Hans Blix",
    "Alejandro Toledo", "Silvio Berlusconi", "Megawati Sukarnoputri", "Roh Moo-hyun", "Kofi Annan",
    "John Negroponte", "Recep Tayyip Erdogan", "Guillermo Coria", "Bill Clinton", "Juan Carlos Ferrero",
    "Tom Daschle", "Saddam Hussein", "Naomi Watts", "Lindsay Davenport",
]  # fmt: skip


def warm_server(photos: Path, base_url: str, names: list[str]) -> None:
    """Fetch every search page and thumbnail once: the demo web renders and caches them on first request."""
    urls = [urljoin(base_url + "/", "search?q=" + name.replace(" ", "+")) for name in names]
    urls += [urljoin(base_url + "/", row["thumb"]) for name in names for row in truth(photos, name)]
    with Downloader(DownloadLimits(concurrency=16, per_host=16, retries=1, timeout_s=60.0, min_side=1)) as dl:
        dl.fetch_all(urls)  # search pages come back as not_an_image: fetched, which is all we need


class CountingFactory:
    """A driver factory that counts the browsers it started (thread-safe)."""

    def __init__(self, factory: DriverFactory) -> None:
        self.factory = factory
        self.started = 0
        self._lock = threading.Lock()

    def __call__(self) -> WebDriver:
        driver = self.factory()
        with self._lock:
            self.started += 1
        return driver


def tree_cpu() -> dict[int, float]:
    """CPU seconds so far of this process and every process below it (demo web, chromedrivers, Chromium)."""
    me = psutil.Process()
    found = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        found[proc.pid] = times.user + times.system
    return found


def machine_busy() -> float:
    times = psutil.cpu_times()
    return times.user + times.system + getattr(times, "nice", 0.0)


def run(
    engine: SearchEngine, names: list[str], workers: int, per_keyword: int, factory: DriverFactory
) -> tuple[float, float, int, int, float, float]:
    """One pool of ``workers`` browsers: start-up s, search s, candidates, failed keywords, CPU s of
    our process tree during the search, and CPU s of the whole machine (other tenants included)."""
    counting = CountingFactory(factory)
    with BrowserPool(engine, workers=workers, make_driver=counting, politeness_delay_s=0.0) as pool:
        start = time.perf_counter()
        for _ in range(3):  # one keyword per idle worker starts every browser; rarely one takes two
            list(pool.search(names[: workers - counting.started], limit=1))
            if counting.started >= workers:
                break
        startup = time.perf_counter() - start
        cpu_before, busy_before = tree_cpu(), machine_busy()
        start = time.perf_counter()
        results = list(pool.search(names, limit=per_keyword))
        seconds = time.perf_counter() - start
        cpu_after, busy_after = tree_cpu(), machine_busy()
    cpu = sum(t - cpu_before.get(pid, 0.0) for pid, t in cpu_after.items())  # processes that ended are missed
    failed = sum(1 for r in results if not r.ok)
    return startup, seconds, sum(len(r.candidates) for r in results), failed, cpu, busy_after - busy_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "lfw-dev")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker counts; the first: baseline")
    parser.add_argument("--per-keyword", type=int, default=60, help="candidates wanted per keyword")
    parser.add_argument("--keywords", type=int, default=len(NAMES), help=f"the first N of the {len(NAMES)} fixed names")
    parser.add_argument("--page-size", type=int, default=20, help="demo-web results per page (scroll loads the rest)")
    parser.add_argument("--repeat", type=int, default=1, help="timed searches per worker count; the best counts")
    parser.add_argument("--chromium-arg", action="append", default=[], metavar="FLAG",
                        help="an extra Chromium flag (repeatable), e.g. "
                        "--chromium-arg=--blink-settings=imagesEnabled=false")  # fmt: skip
    args = parser.parse_args()
    names = NAMES[: args.keywords]
    # the engine's own flags (as scrape() uses them) plus any given here
    flags = (*get_engine("demo", "http://127.0.0.1").browser_args, *args.chromium_arg)
    factory = partial(make_driver, page_load_timeout_s=20.0, extra_args=flags)
    cpus = len(os.sched_getaffinity(0))
    rows = []
    with DemoWeb(args.photos, page_size=args.page_size) as web:
        start = time.perf_counter()
        warm_server(args.photos, web.url, names)
        print(f"demo web warmed in {time.perf_counter() - start:.1f} s; {len(names)} keywords, per_keyword "
              f"{args.per_keyword}, page size {args.page_size}, politeness 0, extra Chromium flags "
              f"{' '.join(flags) or 'none'}; {cpus} CPUs")  # fmt: skip
        engine = get_engine("demo", web.url)
        print(f"{'workers':>7} {'URLs/s':>8} {'per worker':>11} {'vs 1st':>7} {'efficiency':>11} "
              f"{'candidates':>11} {'search s':>9} {'start-up s':>11} {'CPU s/keyword':>14} "
              f"{'machine busy':>13}")  # fmt: skip
        for workers in args.workers:
            best = None
            for _ in range(args.repeat):
                got = run(engine, names, workers, args.per_keyword, factory)
                best = got if best is None or got[1] < best[1] else best
            assert best is not None
            startup, seconds, candidates, failed, cpu, busy = best
            rate = candidates / seconds
            rows.append((workers, rate, candidates, failed))
            base_workers, base_rate = rows[0][0], rows[0][1]
            ratio = rate / base_rate
            efficiency = ratio / (workers / base_workers)
            print(f"{workers:>7} {rate:>8.1f} {rate / workers:>11.1f} {ratio:>6.2f}x {efficiency:>10.0%} "
                  f"{candidates:>11} {seconds:>9.2f} {startup:>11.2f} {cpu / len(names):>14.2f} "
                  f"{busy / (seconds * cpus):>12.0%}", flush=True)  # fmt: skip
    print("URLs/s excludes browser start-up (starting the W browsers and a first 1-result search each: "
          "'start-up s'); efficiency = speed-up / worker ratio; CPU s/keyword: this run's process tree "
          "(browsers, demo web, this process) during the search; machine busy: all CPUs, other work "
          "included")  # fmt: skip
    counts = {candidates for _, _, candidates, _ in rows}
    failures = sum(failed for *_, failed in rows)
    if len(counts) != 1 or failures:
        print(f"MISMATCH: candidates per run {[r[2] for r in rows]}, failed keywords {failures}")
        sys.exit(1)
    print(f"every run found the same {counts.pop()} candidates, no keyword failed")


if __name__ == "__main__":
    main()
