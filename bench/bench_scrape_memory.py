"""Peak memory of a whole scrape() run for N1 and N2 keywords: it should not grow with the keyword count.

Starts the demo web once, then runs ``scrape()`` (real headless Chromium, real downloader, a
RAW run in a temporary store) in a fresh subprocess per keyword count, so each peak belongs
to one run. Reported per run:

- ``scrape() process``: peak RSS of the Python process running scrape(): the kernel's
  high-water mark ``VmHWM`` of /proc/self/status, read in the child (exact; not ``ru_maxrss``,
  which a process started by subprocess inherits from its parent's peak);
- ``browsers``: peak of the summed PSS (proportional set size: a page shared by k processes
  counts 1/k in each, so the sum is their real footprint) of its chromedriver and Chromium
  processes, polled by the parent every ``--poll`` seconds (Linux /proc/PID/smaps_rollup;
  approximate: short peaks between polls are missed).

The keywords are the first N of a fixed shuffle of the people in the photos folder (so N1's
names are a subset of N2's and the two mixes of small and large result lists are alike),
``--per-keyword`` candidates each, politeness 0. Prints both peaks per run and the ratios
N2/N1 (near 1.0 when memory does not grow with the keyword count). Run:

    .venv/bin/python bench/bench_scrape_memory.py [--keywords 40 160] [--per-keyword 20] [--workers 4]

The issue's target size: ``--keywords 40 650`` (650 of lfw-dev's 679 people).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "RESULT "


def _vm_hwm_kib() -> int:
    """This process's peak RSS (``VmHWM`` of /proc/self/status), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(args: argparse.Namespace) -> None:
    """Run one scrape() and print its figures as one JSON line (the child process)."""
    from facescale.config import ScraperSettings
    from facescale.scraper.engines import get_engine
    from facescale.scraper.scrape import scrape
    from facescale.storage import IdentityRegistry, Location, RawStore

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names = args.names_file.read_text().splitlines()
    location = Location.from_uri(str(args.store))
    settings = ScraperSettings(politeness_delay_s=0.0, workers=args.workers, per_keyword=args.per_keyword)
    start = time.perf_counter()
    summary = scrape(
        names, engine=get_engine("demo", args.url), store=RawStore(location), registry=IdentityRegistry(location),
        run_id="bench-memory", settings=settings,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    result = {
        "maxrss_kib": _vm_hwm_kib(),
        "seconds": seconds,
        "accepted": summary.accepted,
        "rejected": sum(summary.rejected.values()),
        "failed": len(summary.failed),
        "finished": summary.finished,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def pss_bytes(pid: int) -> int:
    """A process's proportional set size (its share of pages shared with others); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def run_child(url: str, names: list[str], work: Path, args: argparse.Namespace) -> dict:
    """One scrape() in a fresh subprocess; its result plus the polled peaks of its process tree."""
    names_file = work / f"names-{len(names)}.txt"
    names_file.write_text("\n".join(names) + "\n")
    store = work / f"store-{len(names)}"
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child", "--url", url, "--names-file", str(names_file),
        "--store", str(store), "--per-keyword", str(args.per_keyword), "--workers", str(args.workers),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak_browsers = 0
    while proc.poll() is None:
        browsers = 0
        with contextlib.suppress(psutil.Error):
            browsers = sum(pss_bytes(sub.pid) for sub in root.children(recursive=True))
        peak_browsers = max(peak_browsers, browsers)
        time.sleep(args.poll)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"the scrape() subprocess exited with {proc.returncode}")
    line = next(x for x in reversed(out.splitlines()) if x.startswith(RESULT_PREFIX))
    result = json.loads(line.removeprefix(RESULT_PREFIX))
    result["peak_browsers"] = peak_browsers
    shutil.rmtree(store, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "lfw-dev")
    parser.add_argument("--keywords", type=int, nargs=2, default=[40, 160], metavar=("N1", "N2"))
    parser.add_argument("--per-keyword", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4, help="browser workers (the settings default: 4)")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between RSS samples of the browsers")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the people before taking the first N")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--names-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from facescale.demoweb import DemoWeb

    people = sorted(p.name.replace("_", " ") for p in args.photos.iterdir() if p.is_dir())
    random.Random(args.seed).shuffle(people)
    n1, n2 = args.keywords
    if n2 > len(people):
        raise SystemExit(f"only {len(people)} people in {args.photos}")
    work = Path(tempfile.mkdtemp(prefix="facescale-bench-mem-"))
    results = {}
    try:
        with DemoWeb(args.photos) as web:
            print(f"scrape() of N keywords x {args.per_keyword} candidates, {args.workers} browsers, politeness 0, "
                  f"one subprocess per run")  # fmt: skip
            print(f"{'keywords':>8} {'scrape() process MiB':>21} {'browsers MiB':>13} {'accepted':>9} "
                  f"{'rejected':>9} {'failed kw':>10} {'seconds':>8}")  # fmt: skip
            for n in (n1, n2):
                r = results[n] = run_child(web.url, people[:n], work, args)
                print(f"{n:>8} {r['maxrss_kib'] / 1024:>21.0f} {r['peak_browsers'] / 2**20:>13.0f} "
                      f"{r['accepted']:>9} {r['rejected']:>9} {r['failed']:>10} {r['seconds']:>8.1f}",
                      flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a, b = results[n1], results[n2]
    print(f"ratio N2/N1 ({n2}/{n1} keywords, {b['accepted'] / max(a['accepted'], 1):.1f}x the images): "
          f"scrape() process peak {b['maxrss_kib'] / a['maxrss_kib']:.2f}x, "
          f"browsers peak {b['peak_browsers'] / max(a['peak_browsers'], 1):.2f}x")  # fmt: skip
    print("scrape() process: VmHWM of the child; browsers: summed PSS of chromedriver + Chromium, "
          f"polled every {args.poll:g} s")  # fmt: skip


if __name__ == "__main__":
    main()
