"""The curation stage on Ray: RAW runs -> crop cache -> decisions per identity -> a CURATED dataset version.

`curate` runs four steps; only the first and third touch image bytes, and both stream through
Ray Data (local ``ray.init()`` by default, an existing cluster with ``curation.ray_address`` or
``RAY_ADDRESS``):

1. **Prepare** (Ray): the RAW shards no crop-cache chunk covers yet, in chunks of about
   ``chunk_rows`` rows, go through `CropPreparer` (face crop + quality gates, perceptual keys,
   embedding); each chunk is committed to the crop cache (`facescale.storage.CropStore`) as it
   finishes. A nightly run only prepares what arrived since the last one; a killed run redoes
   at most the chunk it was in (chunk ids come from their contents, so nothing is duplicated).
2. **Decide** (driver, metadata only: keys, embeddings, metrics; about 1 KB per photo, never the
   crops): exact and near-duplicates across all identities (`dedup.resolve`: the same photo
   under two names stays only with the one whose other photos it matches, `decide.attribute`,
   else it is dropped from all), wrong-person cleaning per identity with the
   persistent exclusion list (`cleaning.clean_identity`), the minimum-per-identity gate and
   the balance to ``per_identity`` photos (`balance`), the split by source photo (`split`) and
   the sample plan (`augment.plan_samples`). Each kept identity gets a fingerprint of its
   plan and of every parameter that shapes its samples.
3. **Materialise** (Ray): identities whose fingerprint equals the parent version's are copied
   from the parent's shards unchanged; the others stream their cached crops through
   `SampleMaker` (originals + deterministic augmented copies) into the new version's shards.
   If no identity changed, no version is made.
4. **Gate**: the manifest is committed (the version now exists, unpublished), the Great
   Expectations suite runs over it (`validate.validate_version`) and publishes it only if it
   passes; wrong-person removals join the exclusion list; contact sheets are written per
   touched identity under ``curation/sheets/``.

Rejected photos are counted by reason in the manifest's notes (RAW rejections stay in RAW).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from facescale.config import CurationSettings, check_ray_address
from facescale.errors import ConfigError, FacescaleError
from facescale.storage import (
    REVIEW_SCHEMA,
    ChunkRecord,
    CropStore,
    CurationNotes,
    DatasetStore,
    IdentityEntry,
    KeptNote,
    Location,
    Manifest,
    RawStore,
    ReviewTable,
    SelectionNote,
    StorageRoot,
    ValidationSummary,
    VersionWriter,
    chunk_id,
    iter_batches,
    layout,
    raw_shard_key,
    read_table,
)
from facescale.storage.exclusions import Exclusion
from facescale.storage.lease import store_lease
from facescale.storage.review import KEPT
from facescale.storage.schemas import SPLITS

from .augment import AugmentParams
from .cleaning import SheetItem, Verdict, exclusions_for, write_contact_sheet
from .decide import META_COLUMNS, IdentityDecision, PhotoVerdict, decide
from .faces import CropParams
from .reasons import Reason
from .sink import Receipts, data_context, sink_options, write_shards
from .timing import Stopwatch

if TYPE_CHECKING:
    from facescale.storage.shards import ShardInfo

log = logging.getLogger(__name__)

#: Bumped when the prepare step's output changes meaning (cascades, keys, embedder).
PREPARE_VERSION = "prepare/2: haar crop, phash192 + 5 windows, dlib resnet v1 (crop margin 0.1), aligned-face phash192"
#: Bumped when sample generation changes (augmentation, encoding).
SAMPLES_VERSION = "samples/2: augment.augmented_copy, JPEG q95, identities mixed within a shard's split"
JPEG_QUALITY = 95

class ProgressSink(Protocol):
    """Where curation reports the progress of its long steps (the CLI shows rich bars)."""

    def start(self, step: str, total: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class Progress:
    """The default `ProgressSink`: shows nothing."""

    def start(self, step: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


@dataclass
class CurateSummary:
    """The outcome of one `curate` run."""

    version_id: str | None
    created: bool
    published: bool
    validation: ValidationSummary | None
    new_raw_shards: int
    prepared_rows: int
    identities_kept: int
    identities_waiting: int
    identities_changed: int
    rows: int
    rejected: Counter[str]
    sheets: str | None = None
    message: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step (`_build`, the gate)


# -- parameters -----------------------------------------------------------------------------


def crop_params(settings: CurationSettings) -> CropParams:
    """The `CropParams` of the ``curation`` settings (detection internals keep their measured defaults)."""
    return CropParams(
        min_face_px=settings.min_face_px,
        margin=settings.margin,
        dominance=settings.dominance,
        crop_size=settings.crop_size,
        jpeg_quality=JPEG_QUALITY,
        min_sharpness=settings.min_sharpness,
        min_brightness=settings.min_brightness,
        max_brightness=settings.max_brightness,
        min_contrast=settings.min_contrast,
    )


def _digest(value: Any) -> str:
    return hashlib.blake2b(json.dumps(value, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def prepare_fingerprint(params: CropParams) -> str:
    """Identifies crop-cache contents: the crops, keys and embeddings these parameters make."""
    return _digest([PREPARE_VERSION, params.to_dict()])


def version_config(settings: CurationSettings, params: CropParams) -> dict[str, Any]:
    """The configuration recorded in the manifest (environment-specific keys left out)."""
    config = settings.model_dump(mode="json", exclude={"ray_address", "concurrency", "chunk_rows"})
    config["crop"] = params.to_dict()
    config["augment"] = asdict(AugmentParams())
    return config


# -- Ray --------------------------------------------------------------------------------------


class RaySession:
    """Ray for one curation run, started only when a step has image work to do.

    Uses the running Ray if there is one (tests, an outer job); otherwise connects to
    ``address`` / ``RAY_ADDRESS``, or starts a local one, and shuts down what it started.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.started = False

    def ensure(self) -> None:
        import ray

        if ray.is_initialized():
            return
        try:
            address = check_ray_address(self.address or os.environ.get("RAY_ADDRESS"))
        except ValueError as exc:
            raise ConfigError(f"RAY_ADDRESS: {exc}") from None
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, single-user session
        # "local" starts a private instance: with address=None Ray would join the last cluster
        # started on this machine (its ray_current_cluster file), whoever started it.
        ray.init(
            address=address or "local",
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        self.started = True

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            import ray

            ray.shutdown()


def _actors(settings: CurationSettings, work: int) -> Any:
    """How far each Ray stage scales: the one place that decides it."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    size = max(1, min(settings.concurrency or cpus, work))
    return ray.data.ActorPoolStrategy(min_size=1, max_size=size)


#: Rows per Ray block fed to the crop and sample actors: a read gives one block per file (up to
#: 128 MiB), and an actor takes whole blocks, so without this a small run's single RAW shard
#: was cropped by one actor while the other CPUs idled.
PREPARE_BLOCK_ROWS = 64
SAMPLE_BLOCK_ROWS = 128


def _arrow_fs(location: Location) -> Any:
    if location.is_local:
        return None
    import pyarrow.fs as pafs

    return pafs.PyFileSystem(pafs.FSSpecHandler(location.fs))


# -- step 1: prepare --------------------------------------------------------------------------


#: Crop-cache columns that identify a row (they name the shard a batch is written to).
_CROP_KEYS = ("run_id", "identity_slug", "image_id", "error")


def _plan_chunks(new: Sequence[tuple[str, ShardInfo]], chunk_rows: int) -> list[list[tuple[str, ShardInfo]]]:
    chunks: list[list[tuple[str, ShardInfo]]] = []
    rows = 0
    for item in new:
        if not chunks or rows + item[1].rows > chunk_rows:
            chunks.append([])
            rows = 0
        chunks[-1].append(item)
        rows += item[1].rows
    return chunks


def unprepared_shards(raw: RawStore, crops: CropStore, fingerprint: str) -> list[tuple[str, ShardInfo]]:
    """The RAW shards no crop-cache chunk made with ``fingerprint`` covers, as (run id, shard).

    In run-id order, not commit order: a night's mapped scrape batches finish in any order, and
    the order here decides the chunks, so the crop cache, and so the version's layout. Both
    listings go through the stores' listing indexes, so this reads a few files whatever the
    store's history (`tests/test_history.py`).
    """
    covered = crops.covered(fingerprint)
    return sorted(
        ((r.run_id, s) for r in raw.list() for s in r.shards if raw_shard_key(r.run_id, s) not in covered),
        key=lambda item: (item[0], item[1].path),
    )


def prepare(
    raw: RawStore,
    crops: CropStore,
    settings: CurationSettings,
    params: CropParams,
    progress: ProgressSink,
    ray_session: RaySession,
) -> tuple[int, int, list[str]]:
    """Step 1: fill the crop cache for every RAW shard it lacks.

    Returns:
        (new RAW shards, rows prepared, ids of the chunks written).
    """
    from .prepare import RAW_COLUMNS, CropPreparer

    fingerprint = prepare_fingerprint(params)
    new = unprepared_shards(raw, crops, fingerprint)
    if not new:
        return 0, 0, []
    ray_session.ensure()
    import ray.data

    data_context()
    progress.start("preparing crops", sum(s.rows for _, s in new))
    prepared, written = 0, []
    for group in _plan_chunks(new, settings.chunk_rows):
        keys = [raw_shard_key(run_id, s) for run_id, s in group]
        paths = [raw.location.path(run_id, s.path) for run_id, s in group]
        rows = sum(s.rows for _, s in group)
        ds = ray.data.read_parquet(paths, filesystem=_arrow_fs(raw.location), columns=list(RAW_COLUMNS))
        ds = ds.repartition(target_num_rows_per_block=PREPARE_BLOCK_ROWS)
        ds = ds.map_batches(
            CropPreparer,
            fn_constructor_args=(params,),
            batch_format="pyarrow",
            batch_size=16,
            compute=_actors(settings, math.ceil(rows / 16)),
            num_cpus=1,
        )
        receipts = Receipts()
        with crops.open(chunk_id(fingerprint, keys), fingerprint, keys) as writer:
            ds = ds.map_batches(
                # Ray types a batch function with one argument; sink_options passes the rest as fn_kwargs
                write_shards,  # type: ignore[arg-type]
                **sink_options(writer.target, _CROP_KEYS, ["error"], crops.sizing.max_rows_per_shard),
            )
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                receipts.add(batch)
            writer.adopt(receipts.shards)
            reasons = Counter({(key[0] or "ok"): n for key, n in receipts.tally.items()})
            record = writer.commit({"rows_in": rows, "outcomes": dict(sorted(reasons.items()))})
        prepared += record.rows
        written.append(record.chunk_id)
        progress.advance(rows)
        log.info("crop chunk %s: %d RAW shards, %s", record.chunk_id, len(group), dict(reasons))
    return len(new), prepared, written


# -- step 2: decide ---------------------------------------------------------------------------


def _load_meta(crops: CropStore, chunks: Sequence[ChunkRecord]) -> pa.Table:
    tables = []
    for chunk in chunks:
        for batch in crops.iter_batches([chunk], columns=META_COLUMNS, batch_size=8192):
            table = pa.Table.from_batches([batch])
            tables.append(table.append_column("chunk", pa.array([chunk.chunk_id] * len(table), pa.string())))
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in [*META_COLUMNS, "chunk"]})
    return pa.concat_tables(tables)


def identity_fingerprint(outcome: IdentityDecision, config: Mapping[str, Any]) -> str:
    """Changes whenever anything that shapes the identity's samples does."""
    plan = sorted((p.source_image_id, p.split, p.aug_index) for p in outcome.plan)
    return _digest(
        [SAMPLES_VERSION, outcome.name, outcome.label, plan, config["crop"], config["augment"], config["seed"]]
    )


# -- step 3: materialise ----------------------------------------------------------------------


def _write_reused(
    store: DatasetStore, parent: Manifest, slugs: set[str], writer: VersionWriter
) -> Counter[tuple[str, str]]:
    """Carry the parent's samples of unchanged identities over.

    A parent shard that holds only such identities is copied as a file (byte for byte, so a
    version whose identities are all unchanged has its parent's very layout, and a model
    trained on it sees its parent's input order); from a shard that mixes them with changed
    or dropped identities their rows are copied, streamed a row group at a time.
    """
    counts: Counter[tuple[str, str]] = Counter()
    if not slugs:
        return counts
    wanted = pa.array(sorted(slugs), pa.string())
    for info, path in zip(parent.shards, store.shard_paths(parent), strict=True):
        keys = read_table(store.location, [path], ["identity_slug", "split"])
        present = set(keys.column("identity_slug").to_pylist())
        if present.isdisjoint(slugs):
            continue
        if present <= slugs:
            writer.copy_shard(path, info)
            counts.update(zip(keys.column("identity_slug").to_pylist(), keys.column("split").to_pylist(), strict=True))
            continue
        for batch in iter_batches(store.location, [path], batch_size=1024):
            table = pa.Table.from_batches([batch])
            table = table.filter(pc.is_in(table.column("identity_slug"), value_set=wanted))
            if len(table):
                writer.write(table)
                counts.update(
                    zip(table.column("identity_slug").to_pylist(), table.column("split").to_pylist(), strict=True)
                )
    return counts


def _write_new(
    crops: CropStore,
    chunks: Sequence[ChunkRecord],
    outcomes: Sequence[IdentityDecision],
    settings: CurationSettings,
    writer: VersionWriter,
    progress: ProgressSink,
    ray_session: RaySession,
) -> Counter[tuple[str, str]]:
    """Make the changed identities' samples on Ray; the workers write the shards (see `sink`)."""
    if not outcomes:
        return Counter()
    ray_session.ensure()
    import ray.data

    from .samples import CACHE_COLUMNS, PlannedPhoto, SampleMaker, plan_key

    plan: dict[str, PlannedPhoto] = {}
    for outcome in outcomes:
        indices: dict[str, list[int]] = defaultdict(list)
        splits: dict[str, str] = {}
        for p in outcome.plan:
            indices[p.source_image_id].append(p.aug_index)
            splits[p.source_image_id] = p.split
        for source, ks in indices.items():
            plan[plan_key(outcome.slug, source)] = PlannedPhoto(
                outcome.name, outcome.slug, outcome.label, splits[source], tuple(ks), outcome.chunks.get(source)
            )
    data_context()
    progress.start("making samples", sum(len(o.plan) for o in outcomes))
    paths = crops.shard_paths(chunks)
    ds = ray.data.read_parquet(paths, filesystem=_arrow_fs(crops.location), columns=CACHE_COLUMNS, include_paths=True)
    ds = ds.repartition(target_num_rows_per_block=SAMPLE_BLOCK_ROWS)
    ds = ds.map_batches(
        SampleMaker,
        fn_constructor_args=(plan, settings.seed, JPEG_QUALITY),
        batch_format="pyarrow",
        batch_size=64,
        compute=_actors(settings, max(1, len(plan) // 64)),
        num_cpus=1,
    )
    sizing = writer.store.sizing
    ds = ds.map_batches(
        write_shards,  # type: ignore[arg-type]  # the rest arrive as fn_kwargs (see above)
        # identities mixed within each split of every shard: see `sink.mixed_order`
        **sink_options(
            writer.target, ["sample_id"], ["identity_slug", "split"], sizing.max_rows_per_shard, group_by=["split"]
        ),
    )
    receipts = Receipts()
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        progress.advance(receipts.add(batch))
    writer.adopt(receipts.shards)
    return Counter({(slug, split): n for (slug, split), n in receipts.tally.items()})


# -- step 4: contact sheets ------------------------------------------------------------------


def _write_sheets(
    location: Location,
    crops: CropStore,
    chunks: Sequence[ChunkRecord],
    meta: pa.Table,
    outcomes: Mapping[str, IdentityDecision],
    touched: set[str],
    threshold: float,
    group_rows: int = 4000,
) -> str:
    """Contact sheets for the touched identities and an index page.

    Crops are read in groups of identities of about ``group_rows`` photos, so memory stays
    bounded; identities are grouped in the order of the chunk they first appear in, and each
    group reads only the chunks holding its identities, so the chunks are read about once.
    """
    sheets = location.child(layout.SHEETS_DIR)
    slugs = meta.column("identity_slug").to_pylist()
    order = {c.chunk_id: n for n, c in enumerate(chunks)}
    first_chunk: dict[str, int] = {}
    for slug, chunk in zip(slugs, meta.column("chunk").to_pylist(), strict=True):
        if slug in touched:
            first_chunk[slug] = min(first_chunk.get(slug, len(order)), order.get(chunk, len(order)))
    rows_of = Counter(s for s in slugs if s in touched)
    groups: list[list[str]] = [[]]
    size = 0
    for slug in sorted(rows_of, key=lambda s: (first_chunk[s], s)):
        if groups[-1] and size + rows_of[slug] > group_rows:
            groups.append([])
            size = 0
        groups[-1].append(slug)
        size += rows_of[slug]
    for group in groups:
        if not group:
            continue
        needed = _chunks_for(meta, chunks, set(group))
        wanted = pa.array(group, pa.string())
        images: dict[str, dict[str, bytes | None]] = defaultdict(dict)
        for batch in crops.iter_batches(needed, columns=["identity_slug", "image_id", "crop"], batch_size=2048):
            table = pa.Table.from_batches([batch])
            table = table.filter(pc.is_in(table.column("identity_slug"), value_set=wanted))
            for slug, image_id, crop in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):
                images[slug].setdefault(image_id, crop)
        for slug in group:
            outcome = outcomes.get(slug)
            if outcome is None:
                continue
            items = []
            for index, (image_id, reason, v) in enumerate(_photo_reasons(outcome)):
                verdict = Verdict(index, reason is None, reason, v.distance, v.group, v.reviewed)
                items.append(SheetItem(image_id, images[slug].get(image_id), verdict))
            write_contact_sheet(sheets, outcome.name, items, threshold=threshold, slug=slug)
    _write_sheet_index(sheets, outcomes)
    return sheets.display(sheets.path("index.html"))


def _photo_reasons(outcome: IdentityDecision) -> Iterator[tuple[str, Reason | None, PhotoVerdict]]:
    """Each photo of an identity, by id: the reason it is out (spare and waiting included; None: kept)."""
    selected = set(outcome.selection.selected)
    for image_id, v in sorted(outcome.verdicts.items()):
        reason = v.reason
        if reason is None and image_id not in selected:
            reason = Reason.SPARE if outcome.selection.kept else Reason.WAITING
        yield image_id, reason, v


def _write_review(
    table: ReviewTable, outcomes: Mapping[str, IdentityDecision], threshold: float, version_id: str | None
) -> None:
    """The verdict on every photo of every identity decided (`storage.review`): what the review view reads."""
    columns: dict[str, list[Any]] = {name: [] for name in REVIEW_SCHEMA.names}
    for slug, outcome in outcomes.items():
        for image_id, reason, v in _photo_reasons(outcome):
            for name, value in (("identity_slug", slug), ("identity", outcome.name), ("image_id", image_id),
                                ("status", KEPT if reason is None else reason.value), ("distance", v.distance),
                                ("group", v.group), ("reviewed", v.reviewed), ("chunk", outcome.chunks.get(image_id))):
                columns[name].append(value)
    table.write(pa.table(columns, schema=REVIEW_SCHEMA), threshold=threshold, version_id=version_id)


def _write_sheet_index(sheets: Location, outcomes: Mapping[str, IdentityDecision]) -> None:
    import html

    rows = []
    for slug, o in sorted(outcomes.items()):
        removed = ", ".join(f"{k} {v}" for k, v in o.removed.most_common()) or "-"
        counts = o.counts()
        rows.append(
            f'<tr><td><a href="{html.escape(slug)}.html">{html.escape(o.name)}</a></td>'
            f"<td>{o.selection.status}</td><td>{o.selection.candidates}</td><td>{len(o.selection.selected)}</td>"
            f"<td>{counts['train']}/{counts['val']}/{counts['test']}</td><td>{html.escape(removed)}</td></tr>"
        )
    page = (
        "<!doctype html><meta charset='utf-8'><title>facescale contact sheets</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:1.5em}td,th{padding:.2em .8em;text-align:left}"
        "tr:nth-child(even){background:#f4f4f4}</style><h1>Contact sheets</h1>"
        "<p><a href='../growth.html'>Dataset growth</a>: identities and samples per published version.</p>"
        "<p>Spare: clean but beyond the per-identity quota. Waiting: too few clean crops yet.</p>"
        "<table><tr><th>identity</th><th>status</th><th>clean crops</th><th>selected</th>"
        "<th>train/val/test samples</th><th>removed</th></tr>" + "".join(rows) + "</table>"
    )
    sheets.write_bytes_atomic(sheets.path("index.html"), page.encode())


# -- the stage --------------------------------------------------------------------------------


def curate(
    root: StorageRoot,
    settings: CurationSettings,
    *,
    version_id: str | None = None,
    validate: bool = True,
    progress: ProgressSink | None = None,
) -> CurateSummary:
    """Run the curation stage over everything in the RAW store; see the module docstring.

    Args:
        root: the stores of the storage root (with the storage settings' shard sizes).
        settings: the ``curation`` section.
        version_id: id for the new version (e.g. keyed by a schedule's logical date); if a
            version with this id is already committed, it is returned (validated if it was not).
        validate: run the Great Expectations gate and publish on success.
        progress: progress reporting.
    """
    with store_lease(root.location, "curation"):  # an erasure never rewrites what this reads
        return _curate(root, settings, version_id, validate, progress or Progress())


def _curate(
    root: StorageRoot, settings: CurationSettings, version_id: str | None, validate: bool, progress: ProgressSink
) -> CurateSummary:
    store = root.datasets
    if version_id is not None and store.exists(version_id):
        summary = _existing(store.get(version_id), "version already committed")
    else:
        # Everything the build held (crop metadata, plans, verdicts) is released before validating.
        summary = _build(root, settings, version_id, progress, watch := Stopwatch())
        summary.seconds = watch.seconds
    if validate and summary.version_id is not None and not summary.published:
        started = time.perf_counter()
        summary.validation = _validate(store, summary.version_id, settings)
        summary.seconds["validate"] = time.perf_counter() - started
        summary.published = summary.validation.success
    if summary.seconds:
        log.info("curation steps: %s", ", ".join(f"{k} {v:.1f} s" for k, v in summary.seconds.items()))
    return summary


def _build(
    root: StorageRoot,
    settings: CurationSettings,
    version_id: str | None,
    progress: ProgressSink,
    watch: Stopwatch,
) -> CurateSummary:
    """Steps 1-3 and the commit, each timed on ``watch``: the new version (unvalidated), or why there is none."""
    raw, crops, store, location = root.raw, root.crops, root.datasets, root.location
    params = crop_params(settings)
    config = version_config(settings, params)

    with RaySession(settings.ray_address) as ray_session:
        with watch.step("prepare"):
            new_shards, prepared, new_chunks = prepare(raw, crops, settings, params, progress, ray_session)
        with watch.step("load_meta"):
            chunks = crops.chunks(prepare_fingerprint(params))
            meta = _load_meta(crops, chunks)
            names = {i.slug: (i.name, i.label) for i in root.registry.list()}
            exclusion_list = root.exclusions
            exclusions = exclusion_list.load()
        decisions = decide(meta, names, exclusions, settings)
        watch.merge(decisions.seconds)
        outcomes, rejected = decisions.identities, decisions.rejected
        kept = {slug: o for slug, o in outcomes.items() if o.selection.kept}
        for o in kept.values():
            o.fingerprint = identity_fingerprint(o, config)
        content = _digest(sorted((slug, o.fingerprint) for slug, o in kept.items()))

        parent = store.latest(published_only=False)
        parent_notes = parent.curation_notes() if parent else CurationNotes()
        parent_fps = {s: e.fingerprint for s, e in parent_notes.identities.items()}
        changed = [o for slug, o in kept.items() if parent_fps.get(slug) != o.fingerprint]
        reused = {slug for slug, o in kept.items() if parent_fps.get(slug) == o.fingerprint}
        # contact sheets: every identity on a first run, later those with new photos or a new plan
        touched = set(outcomes) if parent is None else _slugs_in(meta, set(new_chunks)) | {o.slug for o in changed}
        touched &= set(outcomes)
        sheets = None
        if outcomes:
            with watch.step("sheets"):
                sheets = _write_sheets(location, crops, chunks, meta, outcomes, touched, settings.cleaning_threshold)
        auto = [e for o in outcomes.values() for e in _auto_exclusions(o)]

        waiting = sum(1 for o in outcomes.values() if not o.selection.kept)
        threshold = settings.cleaning_threshold
        if not kept:
            _write_review(root.review, outcomes, threshold, None)
            return CurateSummary(
                None, False, False, None, new_raw_shards=new_shards, prepared_rows=prepared, identities_kept=0,
                identities_waiting=waiting, identities_changed=0, rows=0, rejected=rejected, sheets=sheets,
                message=f"no identity has {settings.min_per_identity} clean crops yet; nothing to version",
            )
        if parent is not None and parent_notes.content == content:
            if auto:
                exclusion_list.add(auto)
            _write_review(root.review, outcomes, threshold, parent.version_id)
            summary = _existing(parent, "nothing changed since this version")
            summary.new_raw_shards, summary.prepared_rows, summary.rejected = new_shards, prepared, rejected
            summary.identities_waiting, summary.sheets = waiting, sheets
            return summary

        with store.create(version_id, config=config) as writer:
            counts: Counter[tuple[str, str]] = Counter()
            if parent is not None:
                with watch.step("copy_unchanged"):
                    counts += _write_reused(store, parent, reused, writer)
            needed = _chunks_for(meta, chunks, {o.slug for o in changed})
            with watch.step("samples"):
                counts += _write_new(crops, needed, changed, settings, writer, progress, ray_session)
            entries = []
            for slug, o in sorted(kept.items(), key=lambda kv: kv[1].label):
                expected = o.counts()
                got = {s: counts[(slug, s)] for s in SPLITS}
                if got != expected:
                    raise FacescaleError(
                        f"curation wrote {got} samples for {o.name!r} but planned {expected}: the crop cache "
                        "is missing photos (run `facescale curate` again)"
                    )
                entries.append(
                    IdentityEntry(name=o.name, slug=slug, label=o.label, counts=got, sources=len(o.selection.selected))
                )
            notes = CurationNotes(
                content=content,
                prepare=prepare_fingerprint(params),
                chunks=[c.chunk_id for c in chunks],
                identities={
                    slug: KeptNote(
                        **o.selection.to_manifest(), removed=dict(o.removed), fingerprint=o.fingerprint or "",
                        reused=slug in reused,
                    )
                    for slug, o in sorted(kept.items())
                },
                waiting={
                    slug: SelectionNote(**o.selection.to_manifest(), removed=dict(o.removed))
                    for slug, o in sorted(outcomes.items())
                    if not o.selection.kept
                },
                rejected=dict(sorted(rejected.items())),
                padding="identities below per_identity photos are never padded with duplicates: "
                "their missing train samples are extra augmented copies of their train photos",
            )
            with watch.step("commit"):
                manifest = writer.commit(entries, {"curation": notes.model_dump(mode="json")})
    _write_review(root.review, outcomes, threshold, manifest.version_id)
    if auto:  # after the commit: a run killed before it leaves the list as it was
        exclusion_list.add(auto)
    return CurateSummary(
        manifest.version_id, True, False, None, new_raw_shards=new_shards, prepared_rows=prepared,
        identities_kept=len(kept), identities_waiting=waiting, identities_changed=len(changed), rows=manifest.rows,
        rejected=rejected, sheets=sheets,
    )


def _slugs_in(meta: pa.Table, chunk_ids: set[str]) -> set[str]:
    if not chunk_ids:
        return set()
    rows = meta.filter(pc.is_in(meta.column("chunk"), pa.array(sorted(chunk_ids), pa.string())))
    return set(rows.column("identity_slug").to_pylist())


def _chunks_for(meta: pa.Table, chunks: Sequence[ChunkRecord], slugs: set[str]) -> list[ChunkRecord]:
    if not slugs:
        return []
    rows = meta.filter(pc.is_in(meta.column("identity_slug"), pa.array(sorted(slugs), pa.string())))
    wanted = set(rows.column("chunk").to_pylist())
    return [c for c in chunks if c.chunk_id in wanted]


def _auto_exclusions(outcome: IdentityDecision) -> list[Exclusion]:
    ids = outcome.wrong_person()
    verdicts = [Verdict(n, False, Reason.WRONG_PERSON, None) for n in range(len(ids))]
    return exclusions_for(outcome.slug, ids, verdicts)


def _validate(store: DatasetStore, version_id: str, settings: CurationSettings) -> ValidationSummary:
    from .validate import validate_version

    return validate_version(store, version_id, publish=True, max_duplicate_rate=settings.max_duplicate_rate)


def _existing(manifest: Manifest, why: str) -> CurateSummary:
    notes = manifest.curation_notes()
    return CurateSummary(
        manifest.version_id,
        False,
        manifest.published,
        manifest.validation,
        new_raw_shards=0,
        prepared_rows=0,
        identities_kept=len(manifest.identities),
        identities_waiting=len(notes.waiting),
        identities_changed=0,
        rows=manifest.rows,
        rejected=Counter(notes.rejected),
        message=why,
    )
