"""Peak memory of a whole curate() run over N1 and N2 cached photos: it should not grow with N.

The requirement: peak RSS at 10k vs 50k images within 1.5x (curation streams; nothing collects
the whole dataset). Each size runs ``curate()`` (default ``CurationSettings``: 50 photos per
identity, x10 augmentation, 0.7/0.2/0.1 split; local Ray; the Great Expectations gate on) in a
fresh subprocess over a fresh store, so each peak belongs to one run. Reported per run:

- ``driver``: peak RSS of the Python process running curate() (the Ray driver: step 2 and the
  streaming sinks of steps 1 and 3, the contact sheets and the validation run in it): the
  kernel's high-water mark ``VmHWM`` of /proc/self/status read in the child (exact). Not
  ``ru_maxrss``: a process started by subprocess inherits its parent's peak there (exec keeps
  the old one), and this parent holds the pool. Also its peak private anonymous memory
  (``RssAnon``, polled): RSS without file pages and without the shared-memory pages of Ray's
  object store that the driver maps when it reads blocks.
- ``workers``: peaks of the summed RSS, of the summed PSS and of the summed RssAnon of the Ray
  worker processes (``default_worker.py`` / ``ray::`` processes under the raylet, idle ones
  included), polled by the parent every ``--poll`` seconds, and how many there were. Ray's
  object store is shared memory (/dev/shm) mapped by every process that reads or writes a
  block: RSS counts such a page once in *each* process that touched it, PSS 1/k of it in each
  of the k processes sharing it (so the PSS sum is their joint footprint, the RSS sum an upper
  bound), RssAnon not at all (private heap only). ``ray sys``: the summed PSS of the other Ray
  processes (raylet, which holds the object store, gcs_server, agents). Polled figures miss
  peaks shorter than the poll interval.
- wall time of curate(), rows written, and per step (prepare, load_meta, decide, sheets,
  materialise, validate: the module functions of facescale.pipeline.curate, wrapped in the
  child) its seconds, the driver's largest current RSS and RssAnon during the step (a thread
  of the child samples /proc/self/status), its VmHWM at the step's end (which step made the
  peak) and the Arrow memory pool's peak so far; for step 3 also the object store's size and
  how much of it the driver had mapped (RssShmem).

How the inputs are made (preparing 50k photos for real, dlib's embedding at ~0.1 s a photo,
would take about an hour on 2 cores):

1. A pool of real prepared photos, built once and cached in ``bench/.cache/curate-memory/pool``:
   the first ``--pool-photos`` photos of the ``--pool-people`` people of the photos folder
   (lfw-dev) with the most photos are ingested (`facescale.scraper.ingest.ingest`) and the real
   `curate()` runs over them on local Ray (crop params of the default settings; a small
   ``min_per_identity`` so every person gets a version), so the crop cache holds real crops,
   real perceptual keys and real dlib embeddings. The pool rows used below are the photos that
   pool version selected (they passed dedup and wrong-person cleaning).
2. For a run of N photos, a fresh store whose crop cache holds N rows: about N / 60 synthetic
   identities ("Person 00001", ... registered with `IdentityRegistry.add`) of ~60 rows each;
   each synthetic identity draws its rows, cycling, from the pool rows of one real person
   (so embeddings form one person and cleaning behaves; real crop bytes, face boxes and
   metrics). Every row gets a distinct ``image_id``; its perceptual key and its five window keys
   are XORed with one random 192-bit mask per row, so keys are uniformly random: two rows are
   at Hamming distance ~Binomial(192, 1/2) (mean 96, sd 7), never within the near-duplicate
   distance (22), so dedup drops nothing while still hashing and searching every key. The crop
   bytes get a JPEG comment segment naming the row (same pixels, distinct bytes), so the
   validation's duplicate-bytes check sees distinct originals. Rows are written with the
   storage API (`CropStore.open` / `ChunkWriter.write` / `commit`) in chunks of ``--chunk-rows``
   under the fingerprint ``prepare_fingerprint(crop_params(settings))``; each chunk covers one
   RAW shard of a stub RAW run (`RawStore`; RAW rows with no image bytes and ``error`` set to
   ``bench_stub``: curate only reads RAW run records, to find shards no chunk covers), so
   curate's step 1 finds nothing new and steps 2-4 run over the N cached rows.

Prints a table per run, the per-step table and the ratios N2/N1 of the driver's peak (the
requirement: <= 1.5x) and of the workers'. The stores are deleted after their run (``--keep``
keeps them under ``bench/.cache/curate-memory/``); the pool is reused. Run:

    .venv/bin/python bench/bench_curate_memory.py [--sizes 10000 50000] [--object-store-mib MIB]

About 13 minutes on 2 cores at the default sizes (2.5 minutes more the first time, for the
pool); quick check: ``--sizes 2000 4000``. ``--object-store-mib`` caps Ray's object store (through
``RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES``; default: Ray's, 30% of the RAM). ``--trace`` also
runs tracemalloc in the driver and prints, per step, its traced peak and the top allocation
sites near it (slower, and tracing inflates the peaks; memory of Arrow's pool, which also holds
pandas 3's ``str`` columns, is not traced: the pool's peak is shown instead).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache" / "curate-memory"
RESULT_PREFIX = "RESULT "
RAW_RUN = "bench-stub"
STUB_ERROR = "bench_stub"
#: curate()'s steps as module-level functions of facescale.pipeline.curate (wrapped in the child).
STEPS = {
    "prepare": "prepare",
    "_load_meta": "load_meta",
    "decide": "decide",
    "_write_sheets": "sheets",
    "_write_new": "materialise",
    "_validate": "validate",
}


# -- the pool of real prepared photos ----------------------------------------------------------


def pool_settings(per_person: int) -> Any:
    """Default crop parameters (same prepare fingerprint), rules loose enough to keep every person."""
    from facescale.config import CurationSettings

    return CurationSettings(min_per_identity=5, per_identity=per_person, augment_factor=1)


def ensure_pool(args: argparse.Namespace) -> Path:
    """Build (once) the pool store: ingest + the real curate() over a few hundred lfw-dev photos."""
    from facescale.config import CurationSettings
    from facescale.pipeline.curate import crop_params, curate, prepare_fingerprint
    from facescale.scraper.ingest import ingest
    from facescale.storage import IdentityRegistry, Location, RawStore, StorageRoot

    pool = CACHE / "pool"
    marker = pool / "pool.json"
    spec = {
        "photos": str(args.photos),
        "people": args.pool_people,
        "per_person": args.pool_photos,
        "prepare": prepare_fingerprint(crop_params(CurationSettings())),
    }
    if marker.exists() and json.loads(marker.read_text()).get("spec") == spec:
        return pool / "store"
    shutil.rmtree(pool, ignore_errors=True)
    folders = [d for d in args.photos.iterdir() if d.is_dir()]
    counts = {d: sum(1 for p in d.iterdir() if p.suffix.lower() == ".jpg") for d in folders}
    people = sorted(folders, key=lambda d: (-counts[d], d.name))[: args.pool_people]
    links = pool / "photos"
    for person in people:
        (links / person.name).mkdir(parents=True)
        for src in sorted(p for p in person.iterdir() if p.suffix.lower() == ".jpg")[: args.pool_photos]:
            (links / person.name / src.name).symlink_to(src)
    location = Location.from_uri(str(pool / "store"))
    start = time.perf_counter()
    print(f"building the pool once: {len(people)} people x <= {args.pool_photos} photos of {args.photos} "
          f"(ingest + the real curate() on local Ray)...", flush=True)  # fmt: skip
    ingested = ingest(links, RawStore(location), IdentityRegistry(location), "pool")
    summary = curate(StorageRoot(location), pool_settings(args.pool_photos), validate=False)
    seconds = time.perf_counter() - start
    print(f"pool: {ingested.accepted} photos ingested, {summary.prepared_rows} prepared, "
          f"{summary.identities_kept} people kept, {seconds:.0f} s", flush=True)  # fmt: skip
    marker.write_text(json.dumps({"spec": spec, "prepared": summary.prepared_rows, "seconds": seconds}) + "\n")
    return pool / "store"


def load_pool(store: Path) -> list[list[dict[str, Any]]]:
    """The pool's usable crop rows (those its version selected), grouped by real person."""
    import pyarrow.compute as pc

    from facescale.config import CurationSettings
    from facescale.pipeline.curate import crop_params, prepare_fingerprint
    from facescale.storage import CropStore, DatasetStore, Location

    location = Location.from_uri(str(store))
    datasets = DatasetStore(location)
    version = datasets.latest(published_only=False)
    if version is None:
        raise SystemExit(f"the pool at {store} has no dataset version: delete {CACHE / 'pool'} and run again")
    selected = set()
    for batch in datasets.iter_batches(version.version_id, columns=["identity_slug", "source_image_id", "aug_index"]):
        batch = batch.filter(pc.equal(batch.column("aug_index"), 0))
        slugs, ids = batch.column("identity_slug").to_pylist(), batch.column("source_image_id").to_pylist()
        selected.update(zip(slugs, ids, strict=True))
    crops = CropStore(location)
    by_person: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for batch in crops.iter_batches(crops.chunks(prepare_fingerprint(crop_params(CurationSettings())))):
        for row in batch.to_pylist():
            if row["error"] is None and (row["identity_slug"], row["image_id"]) in selected:
                by_person[row["identity_slug"]].setdefault(row["image_id"], row)
    people = [list(rows.values()) for _, rows in sorted(by_person.items()) if len(rows) >= 8]
    if not people:
        raise SystemExit(f"the pool at {store} has no person with 8 usable crops")
    return people


# -- a synthetic store of N cached rows -------------------------------------------------------


def unique_jpeg(data: bytes, tag: str) -> bytes:
    """The same JPEG with a comment segment (COM) after SOI: same pixels, distinct bytes."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    payload = tag.encode()
    return data[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


def build_store(n: int, people: list[list[dict[str, Any]]], root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A store whose crop cache holds ``n`` prepared rows under synthetic identities (module docstring)."""
    import pyarrow as pa

    from facescale.config import CurationSettings
    from facescale.pipeline.curate import crop_params, prepare_fingerprint
    from facescale.storage import CROP_SCHEMA, CropStore, IdentityRegistry, Location, RawStore, chunk_id, raw_shard_key
    from facescale.storage.manifest import utcnow
    from facescale.storage.schemas import HASH_BYTES

    start = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    location = Location.from_uri(str(root))
    fingerprint = prepare_fingerprint(crop_params(CurationSettings()))
    identities = max(1, round(n / args.per_identity_rows))
    sizes = [n // identities + (1 if i < n % identities else 0) for i in range(identities)]
    names = [f"Person {i + 1:05d}" for i in range(identities)]
    slugs = {i.name: i.slug for i, _ in IdentityRegistry(location).add(names)}
    rng = random.Random(f"{args.seed}/{n}")
    mask_bits = 8 * HASH_BYTES

    def rows() -> Any:
        for k, (name, size) in enumerate(zip(names, sizes, strict=True)):
            person = people[k % len(people)]
            for j in range(size):
                base = person[j % len(person)]
                image_id = hashlib.sha256(f"bench-curate/{n}/{k}/{j}".encode()).hexdigest()
                mask = rng.getrandbits(mask_bits)
                phash = (int.from_bytes(base["phash"], "big") ^ mask).to_bytes(HASH_BYTES, "big")
                old = base["phash_windows"]
                windows = b"".join(
                    (int.from_bytes(old[w : w + HASH_BYTES], "big") ^ mask).to_bytes(HASH_BYTES, "big")
                    for w in range(0, len(old), HASH_BYTES)
                )
                yield {
                    **base,
                    "image_id": image_id,
                    "run_id": RAW_RUN,
                    "identity": name,
                    "identity_slug": slugs[name],
                    "crop": unique_jpeg(base["crop"], f"facescale bench {image_id}"),
                    "phash": phash,
                    "phash_windows": windows,
                }

    raw, crops = RawStore(location), CropStore(location)
    chunks = 0
    stream = rows()
    with raw.open(RAW_RUN, meta={"source": "bench/bench_curate_memory.py"}) as run:
        while True:
            batch = [row for _, row in zip(range(args.chunk_rows), stream, strict=False)]
            if not batch:
                break
            now = utcnow()
            stub = {"run_id": RAW_RUN, "engine": "local", "fetched_at": now, "error": STUB_ERROR}
            run.write(
                {
                    **stub,
                    "image_id": r["image_id"],
                    "identity": r["identity"],
                    "identity_slug": r["identity_slug"],
                    "keyword": r["identity"],
                    "source_url": f"bench://{r['image_id']}",
                }
                for r in batch
            )
            before = len(run.record.shards)
            record = run.commit([f"chunk-{chunks}"])
            keys = [raw_shard_key(RAW_RUN, s) for s in record.shards[before:]]
            with crops.open(chunk_id(fingerprint, keys), fingerprint, keys) as writer:
                writer.write(pa.Table.from_pylist(batch, schema=CROP_SCHEMA))
                writer.commit({"rows_in": len(batch), "outcomes": {"ok": len(batch)}, "bench": "synthetic"})
            chunks += 1
        run.commit(finished=True)
    return {"identities": identities, "chunks": chunks, "seconds": time.perf_counter() - start}


# -- the measured run (child process) ---------------------------------------------------------


def _status_kib(pid: int | str = "self") -> dict[str, int]:
    """VmHWM (peak RSS), VmRSS, RssAnon, RssFile and RssShmem of a process, KiB (empty once it is gone)."""
    found = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                found[key] = int(value.split()[0])
    return found


def child(args: argparse.Namespace) -> None:
    """Run one curate() and print its figures as one JSON line."""
    import pyarrow as pa

    import facescale.pipeline.curate as curation
    from facescale.config import CurationSettings
    from facescale.storage import Location, StorageRoot

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    steps: list[dict[str, Any]] = []
    tracer = Tracer() if args.trace else None
    sampler = Sampler(args.poll)

    def timed(name: str, label: str) -> None:
        fn = getattr(curation, name)

        def wrapper(*a: Any, **kw: Any) -> Any:
            if tracer:
                tracer.begin(label)
            sampler.begin(label)
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                status = _status_kib()
                step = {
                    "step": label,
                    "seconds": time.perf_counter() - start,
                    "hwm_kib": status.get("VmHWM", 0),
                    **sampler.end(),
                    "arrow_peak": pa.default_memory_pool().max_memory(),
                }
                if tracer:
                    step.update(tracer.end())
                if label == "materialise":
                    import ray

                    if ray.is_initialized():
                        step["object_store"] = ray.cluster_resources().get("object_store_memory", 0)
                steps.append(step)

        setattr(curation, name, wrapper)

    for name, label in STEPS.items():
        timed(name, label)
    location = Location.from_uri(str(args.store))
    settings = CurationSettings()
    before = _status_kib().get("VmHWM", 0)
    start = time.perf_counter()
    summary = curation.curate(StorageRoot(location), settings)
    seconds = time.perf_counter() - start
    validation = summary.validation
    result = {
        "hwm_kib": _status_kib().get("VmHWM", 0),
        "hwm_before_kib": before,
        "seconds": seconds,
        "rows": summary.rows,
        "prepared_rows": summary.prepared_rows,
        "kept": summary.identities_kept,
        "waiting": summary.identities_waiting,
        "created": summary.created,
        "published": summary.published,
        "failures": validation.failures[:3] if validation else None,
        "rejected": dict(summary.rejected),
        "steps": steps,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


class Sampler:
    """Per step, the largest current RSS, RssAnon and RssShmem of this process (a thread polls /proc)."""

    def __init__(self, poll: float) -> None:
        import threading

        self.lock = threading.Lock()
        self.poll = poll
        self.peaks: dict[str, int] = {}
        threading.Thread(target=self._sample, daemon=True).start()

    def begin(self, label: str) -> None:
        with self.lock:
            self.peaks = {}
        self._take()

    def end(self) -> dict[str, int]:
        self._take()
        with self.lock:
            peaks, self.peaks = self.peaks, {}
        return {"rss_peak_kib": peaks.get("VmRSS", 0), "anon_peak_kib": peaks.get("RssAnon", 0),
                "shmem_peak_kib": peaks.get("RssShmem", 0)}  # fmt: skip

    def _take(self) -> None:
        status = _status_kib()
        with self.lock:
            for key in ("VmRSS", "RssAnon", "RssShmem"):
                self.peaks[key] = max(self.peaks.get(key, 0), status.get(key, 0))

    def _sample(self) -> None:
        while True:
            self._take()
            time.sleep(self.poll)


class Tracer:
    """tracemalloc in the driver: per step, its traced peak and the top allocation sites near it.

    A thread samples the traced size every 0.5 s and takes a snapshot whenever it is 10% above
    the step's largest so far, so the sites shown are those of (about) the step's peak.
    """

    def __init__(self) -> None:
        import threading
        import tracemalloc

        self.tm = tracemalloc
        tracemalloc.start(1)
        self.lock = threading.Lock()
        self.label = ""
        self.best = 0
        self.top: list[str] = []
        threading.Thread(target=self._sample, daemon=True).start()

    def begin(self, label: str) -> None:
        with self.lock:
            self.label, self.best, self.top = label, 0, []
        self.tm.reset_peak()

    def end(self) -> dict[str, Any]:
        with self.lock:
            self.label = ""
            return {"traced_peak": self.tm.get_traced_memory()[1], "traced_top": self.top}

    def _sample(self) -> None:
        while True:
            time.sleep(0.5)
            with self.lock:
                current = self.tm.get_traced_memory()[0]
                if not self.label or current < self.best * 1.1:
                    continue
                self.best = current
                stats = self.tm.take_snapshot().statistics("lineno")[:8]
                self.top = [
                    f"{s.size / 2**20:7.1f} MiB {s.count:>8} blocks  {s.traceback[0].filename}:{s.traceback[0].lineno}"
                    for s in stats
                ]
                self.top.insert(0, f"snapshot at {current / 2**20:.0f} MiB traced:")


# -- polling the child's process tree (parent) ------------------------------------------------


def _pss_rss_kib(pid: int) -> tuple[int, int]:
    """(Pss, Rss) of a process from /proc/PID/smaps_rollup, KiB; zeros once it is gone."""
    pss = rss = 0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    return pss, rss


def _is_worker(proc: psutil.Process, kinds: dict[int, bool]) -> bool:
    """A Ray worker (default_worker.py, titled ``ray::...``), not a Ray system process."""
    if proc.pid not in kinds:
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:
            return False
        kinds[proc.pid] = "default_worker.py" in cmd or cmd.startswith("ray::")
    return kinds[proc.pid]


def run_child(n: int, store: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One curate() in a fresh subprocess; its result plus the polled peaks of its process tree."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--store", str(store), "--poll", str(args.poll)]
    if args.trace:
        cmd.append("--trace")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    if args.object_store_mib:
        env["RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES"] = str(args.object_store_mib * 2**20)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    root = psutil.Process(proc.pid)
    kinds: dict[int, bool] = {}
    peak = dict.fromkeys(["driver_anon", "driver_shmem", "workers_rss", "workers_pss", "workers_anon"], 0)
    peak.update(system_pss=0, workers=0)
    while proc.poll() is None:
        status = _status_kib(proc.pid)
        peak["driver_anon"] = max(peak["driver_anon"], status.get("RssAnon", 0))
        peak["driver_shmem"] = max(peak["driver_shmem"], status.get("RssShmem", 0))
        now = dict.fromkeys(["workers_rss", "workers_pss", "workers_anon", "system_pss", "workers"], 0)
        with contextlib.suppress(psutil.Error):
            for sub in root.children(recursive=True):
                pss, rss = _pss_rss_kib(sub.pid)
                if _is_worker(sub, kinds):
                    now["workers_rss"] += rss
                    now["workers_pss"] += pss
                    now["workers_anon"] += _status_kib(sub.pid).get("RssAnon", 0)
                    now["workers"] += 1
                else:
                    now["system_pss"] += pss
        for key, value in now.items():
            peak[key] = max(peak[key], value)
        time.sleep(args.poll)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"the curate() subprocess for N={n} exited with {proc.returncode}")
    line = next(x for x in reversed(out.splitlines()) if x.startswith(RESULT_PREFIX))
    result = json.loads(line.removeprefix(RESULT_PREFIX))
    result.update(peak)
    return result


def _mib(kib: float) -> str:
    return f"{kib / 1024:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[10000, 50000], metavar=("N1", "N2"))
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "lfw-dev")
    parser.add_argument("--pool-people", type=int, default=24, help="people with the most photos in the pool")
    parser.add_argument("--pool-photos", type=int, default=25, help="photos per pool person (at most)")
    parser.add_argument("--per-identity-rows", type=int, default=60, help="cached rows per synthetic identity")
    parser.add_argument("--chunk-rows", type=int, default=4096, help="rows per crop-cache chunk")
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between samples of the process tree")
    parser.add_argument("--seed", type=int, default=0, help="seeds the key masks")
    parser.add_argument("--object-store-mib", type=int, help="cap Ray's object store (default: Ray's, 30%% of RAM)")
    parser.add_argument("--keep", action="store_true", help=f"keep the stores under {CACHE}")
    parser.add_argument("--trace", action="store_true", help="tracemalloc in the driver (slow; see the docstring)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    people = load_pool(ensure_pool(args))
    print(f"pool: {sum(len(p) for p in people)} usable prepared photos of {len(people)} real people")
    results = {}
    for n in args.sizes:
        store = CACHE / f"store-{n}"
        built = build_store(n, people, store, args)
        print(f"N={n}: {built['identities']} synthetic identities, {built['chunks']} crop chunks written in "
              f"{built['seconds']:.0f} s; running curate()...", flush=True)  # fmt: skip
        try:
            results[n] = run_child(n, store, args)
        finally:
            if not args.keep:
                shutil.rmtree(store, ignore_errors=True)
        r = results[n]
        if not r["published"]:
            print(f"  note: version not published: created={r['created']} failures={r['failures']}")

    report(results, args)
    print(f"total bench time {time.perf_counter() - started:.0f} s")


def report(results: dict[int, dict[str, Any]], args: argparse.Namespace) -> None:
    """The run table, the per-step table, the ratios."""
    print()
    print("curate() over N cached photos (default settings: 50 per identity, x10 augmentation, validation on), "
          "local Ray, one subprocess per run; memory in MiB")  # fmt: skip
    print(f"{'N':>7} {'driver peak':>11} {'drv anon':>8} {'workers RSS':>11} {'workers PSS':>11} {'wkr anon':>8} "
          f"{'workers':>7} {'ray sys PSS':>11} {'wall s':>7} {'rows':>8} {'kept':>5}")  # fmt: skip
    for n, r in results.items():
        print(f"{n:>7} {_mib(r['hwm_kib']):>11} {_mib(r['driver_anon']):>8} {_mib(r['workers_rss']):>11} "
              f"{_mib(r['workers_pss']):>11} {_mib(r['workers_anon']):>8} {r['workers']:>7} "
              f"{_mib(r['system_pss']):>11} {r['seconds']:>7.0f} {r['rows']:>8} {r['kept']:>5}")  # fmt: skip
    print()
    traced = " / traced peak" if args.trace else ""
    print(f"per step: seconds / driver peak RSS in the step (sampled) / its RssAnon part / VmHWM at its end{traced}")
    labels = list(STEPS.values())
    print(f"{'N':>7} " + " ".join(f"{label:>22}" for label in labels))
    for n, r in results.items():
        cells = []
        by_label = {s["step"]: s for s in r["steps"]}
        for label in labels:
            s = by_label.get(label)
            cell = "-"
            if s is not None:
                cell = f"{s['seconds']:.0f}s/{_mib(s['rss_peak_kib'])}/{_mib(s['anon_peak_kib'])}/{_mib(s['hwm_kib'])}"
                if args.trace:
                    cell += f"/{s['traced_peak'] / 2**20:.0f}"
            cells.append(f"{cell:>22}")
        print(f"{n:>7} " + " ".join(cells))
        arrow = " ".join(f"{s['step']} {s['arrow_peak'] / 2**20:.0f}" for s in r["steps"])
        print(f"{'':>7} driver VmHWM before curate(): {_mib(r['hwm_before_kib'])}; Arrow pool peak so far: {arrow}")
        store = by_label.get("materialise", {}).get("object_store")
        shmem = by_label.get("materialise", {}).get("shmem_peak_kib", 0)
        if store:
            print(f"{'':>7} materialise: object store {store / 2**20:.0f} MiB, of it mapped in the driver "
                  f"(RssShmem) at most {_mib(shmem)}")  # fmt: skip
    if args.trace:
        for n, r in results.items():
            for s in r["steps"]:
                print(f"N={n} {s['step']}: traced peak {s['traced_peak'] / 2**20:.0f} MiB; top sites near it:")
                for line in s["traced_top"]:
                    print(f"    {line}")
    n1, n2 = args.sizes
    a, b = results[n1], results[n2]
    ratio = b["hwm_kib"] / a["hwm_kib"]

    def x(key: str) -> str:
        return f"{b[key] / max(a[key], 1):.2f}x"

    print()
    print(f"ratio N2/N1 ({n2}/{n1} photos, {b['rows'] / max(a['rows'], 1):.1f}x the rows): "
          f"driver peak RSS {ratio:.2f}x ({'within' if ratio <= 1.5 else 'ABOVE'} the 1.5x requirement), "
          f"driver anon {x('driver_anon')}; workers peak RSS {x('workers_rss')}, PSS {x('workers_pss')}, "
          f"anon {x('workers_anon')}")  # fmt: skip
    print("driver peak: VmHWM of the curate() process (exact); drv anon: its peak RssAnon (private heap, without")
    print("the object store's shared pages it maps), polled; workers: summed RSS / PSS / RssAnon of the Ray worker")
    print("processes (RSS counts a shared object-store page once per process mapping it, PSS once in all, anon not")
    print("at all); ray sys: summed PSS of the other Ray processes (raylet, which holds the object store, gcs,")
    print(f"agents); polled every {args.poll:g} s")


if __name__ == "__main__":
    main()
