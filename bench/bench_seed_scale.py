"""The seed-scale night: every lfw-dev person through the nightly growth, what each stage costs, and growth.

The design card's run is about 650 identities. This bench runs the nightly growth's own task
functions (`facescale.app.orchestration`: plan, scrape per batch, curate, the Great Expectations
gate; the DAG tasks call exactly these) in this process on the embedded defaults (local
headless Chromium, local Ray, a local store), against the demo web over all people of
``--photos`` (lfw-dev: 679 people, 4,420 photos):

1. **night 1**: the first ``--first`` names (sorted) as new identities, ``--per-keyword``
   results asked per name (the demo web lists each photo once plus one of each trouble kind
   per 10 photos, so most people have 8-16 results);
2. **night 2**: the next ``--second`` names on the same store (an incremental night; the
   identities still waiting for photos are searched deeper unless their last search had every
   result, see docs/orchestration.md);
3. **night 2 on a store with history**: the same night 2 on a hard-linked copy of the store as
   night 1 left it, to which ``--history`` earlier nights were added first (see
   `synthesise_history`), so the two night-2 figures differ only by the history;
4. **training**: the Inception V3 over every identity of night 2's version for
   ``--train-steps`` batches, then its registration in the model registry (last, because
   TensorFlow stays loaded in this process).

Curation keeps the seed's rules except the minimum per identity (``--min-per-identity``,
default 2: most lfw-dev people have 2-9 photos) and, with it, the smallest group of agreeing
crops wrong-person cleaning trusts (``--min-core``, default 2, the rule's 3 otherwise): 50
sources per identity, x10 augmentation on train, short identities topped up with augmented
copies of their train photos, so each kept identity has 365 samples, the seed's shape. The
local demo web is searched with a politeness delay of ``--politeness`` seconds (a real engine
needs the default 1 s).

Printed per stage: wall seconds, machine CPU seconds (all processes: the machine is shared,
so this is an upper bound), items per wall second and per CPU second, and the peak RSS of this
process (the driver: the scrape's downloader, curation's decisions and sinks, training) and
of the summed worker processes (Ray workers; Chromium and chromedriver), polled every 0.5 s.
Scrape is split by its own clocks (browser seconds per keyword, download seconds per keyword;
they overlap) and curation by its steps (`pipeline.curate`: prepare = crop + gates +
perceptual keys + dlib embedding; dedup; cleaning; balance + split; samples = augmentation +
sample writing; validate). Then bytes stored per photo and per sample, and the ratios
night 2 / night 1 and night 2 with history / night 2. A JSON of everything is written to
``--out``. Every step resumes (the task functions are idempotent): rerun after a crash, but
then the figures of the steps that had finished are those of a rerun.

    .venv/bin/python bench/bench_seed_scale.py [--root var/seed] [--photos ../shared/data/lfw-dev]

On the scaled-out stack (``make cluster``: the store on its S3 endpoint, curation on its Ray
cluster of three nodes, the browsers on its Selenium Grid, the stack's demo web), nights 1 and 2
only, every process on the machine sampled for the workers' memory:

    make cluster && eval "$(scripts/cluster.sh env)" && .venv/bin/python bench/bench_seed_scale.py --cluster
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

POLL_S = 0.5


@dataclass
class Stage:
    name: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    items: int = 0
    unit: str = ""
    driver_peak_mb: float = 0.0
    workers_peak_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        rate = f"{self.items / self.wall_s:,.1f}/s" if self.items and self.wall_s else "-"
        per_cpu = f"{self.items / self.cpu_s:,.2f}" if self.items and self.cpu_s else "-"
        items = f"{self.items:,} {self.unit}" if self.items else "-"
        return (
            f"| {self.name} | {self.wall_s:,.1f} | {self.cpu_s:,.0f} | {items} | {rate} | {per_cpu} | "
            f"{self.driver_peak_mb:,.0f} | {self.workers_peak_mb:,.0f} |"
        )


class Sampler:
    """Polls RSS of this process and of its descendants (Ray workers, browsers) into a timeline."""

    def __init__(self, machine_wide: bool = False) -> None:
        self.timeline: list[tuple[float, float, float]] = []  # (t, driver MB, workers MB)
        self.machine_wide = machine_wide  # the cluster's workers are not this process's children
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._me = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            driver = self._me.memory_info().rss
            workers = 0
            others = psutil.process_iter() if self.machine_wide else self._me.children(recursive=True)
            for child in others:
                try:
                    if _is_worker(child):
                        workers += child.memory_info().rss
                except psutil.Error:
                    continue
            self.timeline.append((time.perf_counter(), driver / 2**20, workers / 2**20))
            self._stop.wait(POLL_S)

    def peaks(self, start: float, end: float) -> tuple[float, float]:
        inside = [(d, w) for t, d, w in self.timeline if start <= t <= end] or [(0.0, 0.0)]
        return max(d for d, _ in inside), max(w for _, w in inside)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _is_worker(proc: psutil.Process) -> bool:
    """Ray worker processes and browsers (not Ray's own daemons: raylet, gcs_server, dashboard)."""
    cmd = " ".join(proc.cmdline())
    return "default_worker.py" in cmd or cmd.startswith("ray::") or "chrom" in proc.name()


def _machine_cpu() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0)


@contextmanager
def measured(stages: list[Stage], sampler: Sampler, name: str, unit: str = "") -> Iterator[Stage]:
    stage = Stage(name, unit=unit)
    start, cpu = time.perf_counter(), _machine_cpu()
    try:
        yield stage
    finally:
        end = time.perf_counter()
        stage.wall_s, stage.cpu_s = end - start, _machine_cpu() - cpu
        stage.driver_peak_mb, stage.workers_peak_mb = sampler.peaks(start, end)
        stages.append(stage)
        print(f"   {name}: {stage.wall_s:.1f} s", flush=True)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def names_of(photos: Path) -> list[str]:
    return sorted(p.name.replace("_", " ") for p in photos.iterdir() if p.is_dir() and any(p.glob("*.jpg")))


def configure(root: Path, keywords: Path, args: argparse.Namespace) -> None:
    """The embedded defaults, with the seed run's few changes (environment, as a user would set them).

    With ``--cluster`` the storage root, Ray address, Grid and work directory stay the stack's
    (`scripts/cluster.sh env`).
    """
    if not args.cluster:
        os.environ.update({
            "FACESCALE_STORAGE__ROOT": str(root),
            "FACESCALE_ORCHESTRATION__WORK_DIR": str(root.parent / f"{root.name}-runs"),
        })
    os.environ.update({
        "FACESCALE_ORCHESTRATION__KEYWORDS_FILE": str(keywords),
        "FACESCALE_ORCHESTRATION__BATCH_SIZE": str(args.batch_size),
        "FACESCALE_SCRAPER__PER_KEYWORD": str(args.per_keyword),
        "FACESCALE_SCRAPER__WORKERS": str(args.browsers),
        "FACESCALE_SCRAPER__POLITENESS_DELAY_S": str(args.politeness),
        "FACESCALE_CURATION__MIN_PER_IDENTITY": str(args.min_per_identity),
        "FACESCALE_CURATION__CLEANING_MIN_CORE": str(args.min_core),
        "FACESCALE_TRAINING__IMAGE_SIZE": "75",
        "FACESCALE_TRAINING__BATCH_SIZE": "32",
        "FACESCALE_TRAINING__MAX_EPOCHS": "1",
        "FACESCALE_TRAINING__MIN_EPOCHS": "1",
    })


def night(
    stages: list[Stage], sampler: Sampler, label: str, key: str, new: int, base_url: str
) -> dict[str, Any]:
    """One nightly growth run through the DAG's task functions, measured per stage."""
    from facescale.app import orchestration as orch
    from facescale.config import load_settings

    settings = load_settings()
    started = time.perf_counter()
    with measured(stages, sampler, f"{label} plan") as st:
        plan = orch.plan_night(settings, key, new_per_night=new)
        st.items, st.unit = len(plan.new) + len(plan.pending) + len(plan.waiting), "names"
    with measured(stages, sampler, f"{label} scrape (search + download)", "results") as st:
        scraped = [orch.scrape_batch(settings, b, engine="demo", base_url=base_url) for b in plan.batches]
        st.items = sum(s.accepted + sum(s.rejected.values()) for s in scraped)
        st.extra = {
            "keywords": sum(s.keywords for s in scraped),
            "accepted": sum(s.accepted for s in scraped),
            "search_browser_s": round(sum(s.search_s for s in scraped), 1),
            "download_s": round(sum(s.download_s for s in scraped), 1),
        }
    curate_start = time.perf_counter()
    with measured(stages, sampler, f"{label} curate (steps below)", "photos") as st:
        curated = orch.curate_version(settings, f"nightly-{key}")
        st.items = curated.prepared_rows
        st.extra = curated.model_dump()
    _curation_steps(stages, sampler, label, curated.seconds, curate_start, curated)
    if curated.created and curated.version_id:
        with measured(stages, sampler, f"{label} validate (Great Expectations)", "samples") as st:
            orch.validate_version(settings, curated.version_id)
            st.items = curated.rows
    total = time.perf_counter() - started
    print(f"   {label}: {total:.1f} s, version {curated.version_id}: {curated.identities_kept} identities kept, "
          f"{curated.identities_waiting} waiting, {curated.rows:,} samples", flush=True)
    return {"wall_s": total, "version": curated.version_id, "kept": curated.identities_kept,
            "waiting": curated.identities_waiting, "rows": curated.rows, "prepared": curated.prepared_rows,
            "changed": curated.identities_changed, "accepted": sum(s.accepted for s in scraped)}


def _curation_steps(
    stages: list[Stage], sampler: Sampler, label: str, seconds: dict[str, float], start: float, curated: Any
) -> None:
    """Curation's own step clocks as stages; memory peaks from the timeline between their ends (in order)."""
    order = ["prepare", "load_meta", "dedup", "cleaning", "balance_split", "sheets", "copy_unchanged", "samples",
             "commit"]
    items = {"prepare": curated.prepared_rows, "samples": curated.rows if label == "night 1" else 0}
    t = start + 1.0  # Ray's start is inside prepare
    for step in order:
        if step not in seconds:
            continue
        end = t + seconds[step]
        driver, workers = sampler.peaks(t, end)
        stages.append(Stage(f"{label}   curate: {step}", wall_s=seconds[step], items=items.get(step, 0),
                            unit="photos" if step == "prepare" else "samples", driver_peak_mb=driver,
                            workers_peak_mb=workers))
        t = end


def synthesise_history(root: Path, nights: int, first_key: str) -> None:
    """Add ``nights`` earlier nights to the store, each as a real night leaves its marks.

    Per night (keys counting back from the day before ``first_key``): its stored plan, seven
    finished RAW runs (written through `RawStore`) of 100 rows each (searches of already
    fetched URLs: rows with reason ``already_fetched`` and no bytes), the crop-cache chunk
    covering them (made by curation's real prepare step on local Ray) and a dataset version:
    a hard-linked copy of the newest version's directory under that night's id, its manifest
    rewritten (id, creation time a day earlier each) so it is older than the newest.
    """
    from datetime import UTC, datetime, timedelta

    from facescale.config import load_settings
    from facescale.pipeline.curate import Progress as CurateProgress
    from facescale.pipeline.curate import RaySession, crop_params, prepare
    from facescale.storage import CropStore, DatasetStore, Location, RawStore

    settings = load_settings()
    location = Location.from_uri(str(root))
    raw, crops, datasets = RawStore(location), CropStore(location), DatasetStore(location)
    newest = datasets.latest(published_only=False)
    assert newest is not None, "night 1 left no version"
    plans = root / "orchestration" / "plans"
    template = json.loads(next(plans.glob("nightly-*.json")).read_text())
    day = datetime.strptime(first_key, "%Y%m%d").replace(tzinfo=UTC)
    people = [(e.name, e.slug) for e in newest.identities[:10]]  # kept ones: the searches change nothing
    with RaySession(settings.curation.ray_address) as session:
        for n in range(1, nights + 1):
            when = day - timedelta(days=n)
            key = when.strftime("%Y%m%d")
            plan = {**template, "key": key, "new": [], "pending": [], "waiting": [p for p, _ in people],
                    "given_up": [], "waiting_nights": {}, "batches": []}
            (plans / f"nightly-{key}.json").write_text(json.dumps(plan, indent=2))
            for b in range(7):
                run_id = f"nightly-{key}-b{b:02d}"
                if run_id in raw.run_ids():
                    continue
                with raw.open(run_id, meta={"engine": "demo", "synthetic": True}) as writer:
                    writer.write([{
                        "image_id": None, "run_id": run_id, "identity": people[i % len(people)][0],
                        "identity_slug": people[i % len(people)][1], "keyword": people[i % len(people)][0],
                        "engine": "demo", "source_url": f"http://history.invalid/{key}/{b}/{i}.jpg",
                        "page_url": None, "rank": i, "fetched_at": when, "http_status": None,
                        "content_type": None, "image": None, "width": None, "height": None,
                        "error": "already_fetched",
                    } for i in range(100)])
                    writer.commit([], finished=True)
            prepare(raw, crops, settings.curation, crop_params(settings.curation), CurateProgress(), session)
            version = f"nightly-{key}"
            target = root / "datasets" / version
            if not target.exists():
                subprocess.run(["cp", "-al", str(root / "datasets" / newest.version_id), str(target)], check=True)
                manifest = json.loads((target / "manifest.json").read_text())
                manifest["version_id"] = version
                manifest["created_at"] = when.isoformat()
                (target / "manifest.json").unlink()  # a hard link: replace, never write through it
                (target / "manifest.json").write_text(json.dumps(manifest))


def train_and_register(stages: list[Stage], sampler: Sampler, steps: int) -> dict[str, Any]:
    from facescale.app.services import Services
    from facescale.config import load_settings

    settings = load_settings()
    services = Services(settings)
    version = services.datasets().latest()
    assert version is not None
    out = Path(settings.orchestration.work_dir) / f"seed-train-{version.version_id}-{steps}"
    with measured(stages, sampler, "training (Inception V3)", "samples") as st:
        result = services.train_model(
            version.version_id, run_dir=out, max_steps_per_epoch=steps, register=False
        ).result
        st.items = steps * settings.training.batch_size
        st.extra = {"classes": result.num_classes, "steps": steps}
    with measured(stages, sampler, "model registration and calibration") as st:
        record = services.register_model(out)
    return {"model": record.model_id, "classes": result.num_classes}


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("var/seed"))
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/lfw-dev"))
    parser.add_argument("--first", type=int, default=629, help="new identities on night 1")
    parser.add_argument("--second", type=int, default=50, help="new identities on night 2")
    parser.add_argument("--per-keyword", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=50, help="names per scrape batch (RAW run)")
    parser.add_argument("--browsers", type=int, default=2)
    parser.add_argument("--politeness", type=float, default=0.25)
    parser.add_argument("--min-per-identity", type=int, default=2)
    parser.add_argument("--min-core", type=int, default=2, help="curation.cleaning_min_core (agreeing crops)")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--history", type=int, default=30, help="earlier nights synthesised for the history run")
    parser.add_argument("--date", default="20261201", help="night 1's key; night 2 is the day after")
    parser.add_argument("--out", type=Path, default=None, help="JSON of the figures (default ROOT-figures.json)")
    parser.add_argument("--cluster", action="store_true",
                        help="on the `make cluster` stack (eval \"$(scripts/cluster.sh env)\" first): its S3 root, Ray "
                        "cluster, Grid and demo web; nights 1 and 2 only (no hard-linked history, no training)")
    args = parser.parse_args()

    from facescale.demoweb import DemoWeb

    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    names = names_of(args.photos)
    if len(names) < args.first + args.second:
        parser.error(f"{args.photos} has {len(names)} people, fewer than --first + --second")
    keywords = root.parent / f"{root.name}-keywords.txt"
    keywords.write_text("# every person of the photos folder, sorted\n" + "\n".join(names) + "\n")
    history_root = root.parent / f"{root.name}-history"
    day2 = time.strftime("%Y%m%d", time.gmtime(time.mktime(time.strptime(args.date, "%Y%m%d")) + 86400 + 43200))
    stages: list[Stage] = []
    figures: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count()}
    if args.cluster:
        cluster(args, root, keywords, day2, stages, figures)
        return
    with DemoWeb(args.photos.resolve(), max_results=max(120, args.per_keyword)) as web, Sampler() as sampler:
        configure(root, keywords, args)
        print(f"== night 1: {args.first} new identities ({args.date})", flush=True)
        figures["night1"] = night(stages, sampler, "night 1", args.date, args.first, web.url)
        figures["bytes"] = {
            "raw": du(root / "raw"), "crops": du(root / "curation" / "crops"),
            "version": du(root / "datasets" / str(figures["night1"]["version"])),
        }
        if not history_root.exists():  # the store as night 1 left it, for the history run
            subprocess.run(["cp", "-al", str(root), str(history_root)], check=True)
        print(f"== night 2: {args.second} new identities ({day2})", flush=True)
        figures["night2"] = night(stages, sampler, "night 2", day2, args.second, web.url)
        print(f"== night 2 on a store with {args.history} earlier nights", flush=True)
        configure(history_root, keywords, args)
        figures["history_synthesis_s"] = _timed(lambda: synthesise_history(history_root, args.history, args.date))
        figures["night2_history"] = night(stages, sampler, "night 2 + history", day2, args.second, web.url)
        configure(root, keywords, args)
        if args.train_steps:  # last: TensorFlow stays loaded in this process and would weigh on the nights' peaks
            print(f"== training: {args.train_steps} steps over every kept identity of night 2's version", flush=True)
            figures["training"] = train_and_register(stages, sampler, args.train_steps)
    figures["stages"] = [asdict(s) for s in stages]
    report(figures, stages)
    out = args.out or root.parent / f"{root.name}-figures.json"
    out.write_text(json.dumps(figures, indent=2, default=str))
    print(f"figures: {out}")


def cluster(
    args: argparse.Namespace, root: Path, keywords: Path, day2: str, stages: list[Stage], figures: dict[str, Any]
) -> None:
    """Nights 1 and 2 on the scaled-out stack: S3 storage, the Ray cluster, the Grid, the stack's demo web."""
    from facescale.app.services import Services
    from facescale.config import load_settings

    configure(root, keywords, args)
    settings = load_settings()
    base_url = settings.scraper.base_url
    if not settings.storage.root.startswith("s3://") or not base_url:
        raise SystemExit('--cluster needs the stack\'s environment: eval "$(scripts/cluster.sh env)"')
    with Sampler(machine_wide=True) as sampler:
        print(f"== night 1 on the cluster ({settings.storage.root}): {args.first} new identities", flush=True)
        figures["night1"] = night(stages, sampler, "night 1", args.date, args.first, base_url)
        print(f"== night 2 on the cluster: {args.second} new identities", flush=True)
        figures["night2"] = night(stages, sampler, "night 2", day2, args.second, base_url)
    location = Services(settings).location()
    version = location.path("datasets", str(figures["night1"]["version"]))
    figures["bytes"] = {
        "raw": location.fs.du(location.path("raw")), "crops": location.fs.du(location.path("curation", "crops")),
        "version": location.fs.du(version),
    }
    figures["night2_history"] = figures["night2"]  # not measured on the cluster
    figures["stages"] = [asdict(s) for s in stages]
    report(figures, stages)
    out = args.out or root.parent / f"{root.name}-cluster-figures.json"
    out.write_text(json.dumps(figures, indent=2, default=str))
    print(f"figures: {out}")


def report(figures: dict[str, Any], stages: list[Stage]) -> None:
    print("\n| stage | wall s | machine CPU s | items | per wall s | per CPU s | driver peak MB | workers peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for stage in stages:
        print(stage.row())
    for stage in stages:
        if stage.name.endswith("scrape (search + download)"):
            print(f"{stage.name}: {stage.extra}")
    n1, n2, n2h = figures["night1"], figures["night2"], figures["night2_history"]
    b = figures["bytes"]
    photos = max(1, n1["accepted"])
    print(f"\nbytes stored: RAW {b['raw'] / photos / 1024:.1f} KiB per accepted photo, crop cache "
          f"{b['crops'] / max(1, n1['prepared']) / 1024:.1f} KiB per prepared photo, version "
          f"{b['version'] / max(1, n1['rows']) / 1024:.1f} KiB per sample ({b['version'] / 2**30:.2f} GiB)")
    print(f"night 1 {n1['wall_s']:.0f} s; night 2 {n2['wall_s']:.0f} s = {n2['wall_s'] / n1['wall_s']:.1%} of night 1; "
          f"night 2 on {figures['args']['history']} earlier nights {n2h['wall_s']:.0f} s = "
          f"{n2h['wall_s'] / n2['wall_s']:.2f}x night 2")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
