"""What each page of the review view shows, read from a storage root (local or ``s3://``): typed, no HTTP.

Every function takes a `StorageRoot` and returns a pydantic model the templates render; none
writes. The photos' verdicts come from the last curation's review table (`storage.review`), the
decisions people made from the exclusion list, sizes over time from the growth index, versions
from their manifests and cards, models from the registry. `StoreFiles` says which stored files
the view may stream to a browser (Data Docs, plots), so a route never serves anything else.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
from pydantic import BaseModel

from facescale.errors import NotFoundError
from facescale.pipeline.reasons import CLEANING_REASONS, Reason
from facescale.storage.diff import VersionDiff  # a field of VersionPage: pydantic needs it at run time
from facescale.storage.review import KEPT

if TYPE_CHECKING:
    from facescale.storage import Exclusion, Manifest, ModelRecord, StorageRoot

#: How far from the cleaning threshold (either side) a photo is doubtful enough for the queue.
QUEUE_MARGIN = 0.08
#: The most photos the queue lists at once (nearest the threshold first).
QUEUE_LIMIT = 60
#: The statuses a person may want to turn around: kept ones (exclude) and the cleaner's removals (keep).
_REVIEWABLE = [KEPT, Reason.WRONG_PERSON.value, Reason.SPARE.value, Reason.WAITING.value]


class Decision(BaseModel):
    """A person's (or the cleaner's) entry on the exclusion list for one photo."""

    reason: str
    source: str
    added_by: str | None
    added_at: datetime
    excludes: bool
    undoable: bool  # a manual decision (undo puts back what it replaced)

    @classmethod
    def of(cls, entry: Exclusion) -> Decision:
        return cls(reason=entry.reason, source=entry.source, added_by=entry.added_by, added_at=entry.added_at,
                   excludes=entry.excludes, undoable=entry.source == "manual")


class Photo(BaseModel):
    """One photo of an identity as the last curation saw it, and any decision on it since."""

    identity_slug: str
    identity: str
    image_id: str
    status: str  # "kept" or the reason it is out
    distance: float | None
    group: int | None
    reviewed: bool
    has_crop: bool
    decision: Decision | None = None

    @property
    def kept(self) -> bool:
        return self.status == KEPT


class GrowthRow(BaseModel):
    version_id: str
    created_at: datetime
    identities: int
    samples: int
    splits: dict[str, int]
    waiting: int
    removed: list[tuple[str, int]]  # reasons, most first


class WaitingIdentity(BaseModel):
    slug: str
    name: str
    candidates: int  # clean photos it has
    needed: int  # more it needs before it is used
    removed: list[tuple[str, int]]


class Growth(BaseModel):
    versions: list[GrowthRow]  # newest first
    latest: str | None  # the newest version, published or not
    waiting: list[WaitingIdentity]  # in the newest version
    has_plot: bool


class ModelSummary(BaseModel):
    model_id: str
    created_at: datetime
    metrics: dict[str, float]
    plots: list[str]  # store paths of its evaluation images
    needs_retrain: bool


class VersionPage(BaseModel):
    version_id: str
    parent: str | None
    created_at: datetime
    published: bool
    rows: int
    identities: list[tuple[str, str, int, dict[str, int]]]  # slug, name, label, counts
    gate: dict[str, object] | None  # the validation summary
    data_docs: str | None  # store path of the Data Docs page
    card_html: str | None
    diff: VersionDiff | None
    models: list[ModelSummary]
    erasures: list[str]


class IdentityPage(BaseModel):
    slug: str
    name: str
    label: int
    status: str  # active, removed, erased
    threshold: float
    curated_at: datetime | None
    kept: list[Photo]
    removed: list[Photo]
    removed_by_reason: list[tuple[str, int]]
    decisions: int


class Queue(BaseModel):
    threshold: float
    margin: float
    curated_at: datetime | None
    doubtful: list[Photo]  # nearest the threshold first; undecided only
    decided: list[Photo]  # doubtful photos a person already decided on
    ambiguous: list[tuple[str, str, int]]  # slug, name, photos held back
    waiting: list[WaitingIdentity]


# -- pages ----------------------------------------------------------------------------------------


def growth(root: StorageRoot) -> Growth:
    """Identities and samples per published version, each one's removals, and who waits and why."""
    from facescale.storage.layout import CURATION_DIR

    points = root.datasets.growth()
    rows = [
        GrowthRow(version_id=p.version_id, created_at=p.created_at, identities=p.identities, samples=p.samples,
                  splits=p.splits, waiting=p.waiting, removed=_most(p.removed))
        for p in reversed(points)
    ]
    latest = root.datasets.latest(published_only=False)
    plot = root.location.path(CURATION_DIR, "growth.png")
    return Growth(versions=rows, latest=latest.version_id if latest else None,
                  waiting=_waiting(root, latest), has_plot=root.location.exists(plot))


def version(root: StorageRoot, version_id: str) -> VersionPage:
    """A version: its card, its gate and Data Docs, what changed against its parent, the models trained on it."""
    from facescale.storage.diff import diff_versions

    datasets = root.datasets
    manifest = datasets.get(version_id)
    card_path = datasets.card_path(version_id)
    card = datasets.location.read_bytes(card_path).decode() if datasets.location.exists(card_path) else None
    diff = None
    if manifest.parent and datasets.exists(manifest.parent):
        diff = diff_versions(datasets, manifest.parent, version_id, root.exclusions)
    gate = manifest.validation
    docs = None
    if gate is not None and gate.data_docs:
        docs = posixpath.normpath(posixpath.join("datasets", version_id, gate.data_docs))
    models = [_model(m) for m in root.models.list() if m.version_id == version_id]
    return VersionPage(
        version_id=version_id, parent=manifest.parent, created_at=manifest.created_at, published=manifest.published,
        rows=manifest.rows,
        identities=[(e.slug, e.name, e.label, {s: e.counts.get(s, 0) for s in ("train", "val", "test")})
                    for e in sorted(manifest.identities, key=lambda e: e.label)],
        gate=gate.model_dump(mode="json") if gate else None, data_docs=docs,
        card_html=card_html(card) if card is not None else None, diff=diff,
        models=sorted(models, key=lambda m: m.created_at, reverse=True),
        erasures=[str(e) for e in manifest.notes.get("erasures", [])],
    )


def identity(root: StorageRoot, slug: str) -> IdentityPage:
    """One identity's kept and removed photos with the reason for each, and the decisions on them."""
    registry = {i.slug: i for i in root.registry.load()}
    person = registry.get(slug)
    if person is None or person.status == "erased":
        raise NotFoundError(f"unknown identity {slug!r}")
    photos, threshold, curated_at = _photos(root, slug)
    kept = sorted((p for p in photos if p.kept), key=lambda p: -(p.distance or 0.0))  # doubtful first
    removed = sorted((p for p in photos if not p.kept), key=_removed_order)
    return IdentityPage(
        slug=slug, name=person.name, label=person.label, status=person.status, threshold=threshold,
        curated_at=curated_at, kept=kept, removed=removed,
        removed_by_reason=_most(Counter(p.status for p in removed)),
        decisions=sum(1 for p in photos if p.decision is not None and p.decision.source == "manual"),
    )


def queue(root: StorageRoot, margin: float = QUEUE_MARGIN, limit: int = QUEUE_LIMIT) -> Queue:
    """The photos nearest the cleaning threshold on either side, ambiguous identities, waiting identities.

    The rows are narrowed in Arrow first (near the threshold, or ambiguous), so a store of
    hundreds of thousands of photos builds a few hundred `Photo` objects, not one per photo.
    """
    import pyarrow.compute as pc

    def near(table: pa.Table, threshold: float) -> pa.Array:
        gap = pc.abs(pc.subtract(table.column("distance"), threshold))
        doubtful = pc.and_(pc.less_equal(gap, margin), pc.is_in(table.column("status"), pa.array(_REVIEWABLE)))
        return pc.or_(pc.fill_null(doubtful, False), pc.equal(table.column("status"), Reason.AMBIGUOUS.value))

    photos, threshold, curated_at = _photos(root, where=near)
    doubtful = [p for p in photos if p.status in _REVIEWABLE]
    doubtful.sort(key=lambda p: (abs((p.distance or 0.0) - threshold), p.identity_slug, p.image_id))
    undecided = [p for p in doubtful if p.decision is None or p.decision.source == "auto"]
    decided = [p for p in doubtful if p.decision is not None and p.decision.source == "manual"]
    ambiguous = Counter((p.identity_slug, p.identity) for p in photos if p.status == Reason.AMBIGUOUS)
    latest = root.datasets.latest(published_only=False)
    return Queue(
        threshold=threshold, margin=margin, curated_at=curated_at, doubtful=undecided[:limit], decided=decided,
        ambiguous=[(slug, name, n) for (slug, name), n in sorted(ambiguous.items())],
        waiting=_waiting(root, latest),
    )


def photo_chunks(root: StorageRoot, slug: str) -> dict[str, str | None]:
    """Each photo of an identity in the last curation -> the crop-cache chunk holding its crop."""
    table, _ = root.review.read(slug)
    return dict(zip(table.column("image_id").to_pylist(), table.column("chunk").to_pylist(), strict=True))


def photo_chunk(root: StorageRoot, slug: str, image_id: str) -> str:
    """The crop-cache chunk holding this photo's crop (as the review table names it)."""
    chunk = photo_chunks(root, slug).get(image_id)
    if chunk is None:
        raise NotFoundError(f"no photo {image_id} of {slug} in the last curation")
    return chunk


def run_versions(extras: list[dict[str, object]]) -> tuple[list[str], list[str]]:
    """The dataset versions and models a DAG run's asset events name (their ``extra``)."""
    versions = [str(e["version_id"]) for e in extras if e.get("version_id") and not e.get("model_id")]
    models = [str(e["model_id"]) for e in extras if e.get("model_id")]
    return list(dict.fromkeys(versions)), list(dict.fromkeys(models))


# -- stored files the view may stream ------------------------------------------------------------

#: Store paths a browser may fetch through the view: Data Docs (a version's and their shared
#: static files), the growth plot, models' evaluation plots. Nothing else (no shards, no records).
_SERVABLE = (
    re.compile(r"^datasets/[A-Za-z0-9._-]+/validation/.+\.(html|css|js|json|png|svg|ico|woff2?|ttf|eot|map)$"),
    re.compile(r"^static/datadocs/.+$"),
    re.compile(r"^curation/growth\.png$"),
    re.compile(r"^models/[A-Za-z0-9._-]+/files/.+\.(png|svg)$"),
)


def servable(path: str) -> str:
    """The store path ``path`` normalised, if the view may stream it; else `NotFoundError`."""
    clean = posixpath.normpath(path.lstrip("/"))
    if clean.startswith("..") or "/../" in f"/{clean}/" or not any(p.match(clean) for p in _SERVABLE):
        raise NotFoundError(f"not served: {path}")
    return clean


# -- helpers --------------------------------------------------------------------------------------


def card_html(card: str) -> str:
    """A dataset card's Markdown body as HTML (its YAML front matter left out; raw HTML in it escaped)."""
    from markdown_it import MarkdownIt

    body = card
    if card.startswith("---\n"):
        _, _, body = card[4:].partition("\n---\n")
    return str(MarkdownIt("commonmark", {"html": False}).enable("table").render(body))


def _photos(
    root: StorageRoot, slug: str | None = None, where: Callable[[pa.Table, float], pa.Array] | None = None
) -> tuple[list[Photo], float, datetime | None]:
    """The review table's photos (one identity's, or those ``where`` selects) with the decisions on them."""
    table, info = root.review.read(slug)
    if where is not None and table.num_rows:
        table = table.filter(where(table, info.threshold))
    decisions = {e.key: e for e in root.exclusions.load() if slug is None or e.identity_slug == slug}
    photos = []
    for row in table.to_pylist():
        entry = decisions.get((row["identity_slug"], row["image_id"]))
        photos.append(Photo(
            identity_slug=row["identity_slug"], identity=row["identity"], image_id=row["image_id"],
            status=row["status"], distance=row["distance"], group=row["group"], reviewed=row["reviewed"],
            has_crop=row["chunk"] is not None, decision=Decision.of(entry) if entry else None,
        ))
    return photos, info.threshold, info.written_at


def _removed_order(photo: Photo) -> tuple[int, float, str]:
    order = [r.value for r in CLEANING_REASONS]  # the contact sheets' order: the likeliest mistakes first
    rank = order.index(photo.status) if photo.status in order else len(order)
    return (rank, photo.distance if photo.distance is not None else float("inf"), photo.image_id)


def _waiting(root: StorageRoot, manifest: Manifest | None) -> list[WaitingIdentity]:
    if manifest is None:
        return []
    names = {i.slug: i.name for i in root.registry.load()}
    notes = manifest.curation_notes()
    return [
        WaitingIdentity(slug=slug, name=names.get(slug, slug), candidates=n.candidates, needed=n.needed,
                        removed=_most(n.removed))
        for slug, n in sorted(notes.waiting.items())
    ]


def _model(record: ModelRecord) -> ModelSummary:
    from facescale.storage.layout import MODEL_FILES_DIR, MODELS_DIR

    metrics = dict(_numbers(record.metrics))
    plots = [posixpath.join(MODELS_DIR, record.model_id, MODEL_FILES_DIR, f.path)
             for f in record.files if f.path.endswith(".png")]
    return ModelSummary(model_id=record.model_id, created_at=record.created_at, metrics=metrics, plots=sorted(plots),
                        needs_retrain=bool(record.notes.get("retrain")))


def _numbers(doc: object, prefix: str = "") -> Iterator[tuple[str, float]]:
    """The numbers in a nested record, by dotted key (``training.final.val_accuracy``)."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _numbers(value, f"{prefix}{key}.")
    elif isinstance(doc, int | float) and not isinstance(doc, bool):
        yield prefix.rstrip("."), float(doc)


def _most(counts: dict[str, int] | Counter[str]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))
