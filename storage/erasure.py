"""Erasure: a person, or single photos, taken out of every store of a root, and a record that shows it.

An erasure is planned, then carried out step by step, each step idempotent, under the store
lease (`storage.lease`: never while curation runs):

1. **plan**: the RAW rows to erase are found (a person: every row filed under their slug;
   photos: every row of those image ids or source URLs), then every row anywhere holding the
   same image bytes (by ``image_id``, the bytes' sha256); the crop, version and model entries
   that hold them. The plan, with each affected shard's checksum, is the erasure record
   ``erasures/<id>/erasure.json``, written before anything changes.
2. **raw**: each affected RAW shard is rewritten without those rows (every other row keeps its
   values and order), and its run record takes the new checksum.
3. **crops**: the same in the crop cache (crops, perceptual keys, embeddings); every chunk's
   record follows the RAW shards' new checksums, so curation never crops them again.
4. **versions**: every version holding the rows, published or not, is rewritten in place: its
   shards, ``validation/decoded.parquet``, a manifest with the new checksums and counts (an
   erased person's entry and notes gone; ``notes.erasures`` names the erasure), its card, and
   the gate's result and Data Docs (their expectations list every slug) without the person.
   The version id stays: models and exports keep naming it. See docs/security.md.
5. **models**: each model trained on an affected version drops the erased rows from its
   enrolled galleries at once (the ``ids`` saved with each gallery row; a gallery saved before
   those ids drops every row of the affected identities), the erased person's label from
   ``labels.json`` (serving never names them again), its feature-map plot (made from one test
   photo) and, for a person, its confusion plot and their entries in its metrics; its record
   says ``notes.retrain: true`` and names the erasure.
6. **rest**: the registry keeps an erased person as a tombstone (label reserved, name gone), the
   exclusion list, the stored plans and the contact sheets drop them, and the listing indexes
   (derived) are removed to be rebuilt.
7. **done**: the record keeps counts and ids only: the erased image ids, the sha256 of each
   erased URL (the scraper never fetches one again), the sha256 of the erased person's name
   key and slug (the nightly plan never searches them again unless someone adds them anew), the
   perceptual keys and the sha256 of each erased embedding (for `verify`), and the exports made
   of affected versions (they live outside the store: the operator must erase those).

A run killed at any point and started again with the same target resumes the unfinished
erasure of that target: a shard already rewritten holds nothing to erase and is only checked
against its record. `verify` scans every store for what an erasure record names.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facescale.errors import FacescaleError, NotFoundError

from . import layout
from .erasures import (
    RECORD_FILE,
    ErasureRecord,
    ErasureStore,
    Found,
    Target,
    digest,
    embedding_digest,
    is_image_id,
)
from .fs import Location, os_errors, sha256_file
from .identities import Identity, make_slug, name_key, tombstone_name
from .lease import store_lease
from .manifest import Manifest, utcnow
from .root import StorageRoot
from .schemas import CROP_SCHEMA, CURATED_SCHEMA, RAW_SCHEMA
from .shards import ShardInfo, rewrite_shard

log = logging.getLogger(__name__)

#: Derived files an erasure removes (each is rebuilt from the entries by the next listing).
DERIVED_INDEXES = (
    "raw/_index.json", "raw/_verdicts.json", "curation/crops/_index.json", "datasets/_index.json",
    "datasets/_growth.json", "orchestration/plans/_index.json",
)
#: Model files made from single photos or naming every identity (removed, remade by `facescale evaluate`).
PHOTO_PLOTS = ("eval/feature_maps.png",)
NAME_PLOTS = ("eval/confusion.png",)
NAMED_JSON = ("eval/metrics.json", "calibration/report.json")
GALLERY_PREFIX = "calibration/gallery-"
#: The columns each store's erased rows are found by (`_raw_mask`, `_curated_mask`).
RAW_COLUMNS = ["image_id", "identity_slug", "source_url"]
CURATED_COLUMNS = ["source_image_id", "identity_slug"]


# -- the request -------------------------------------------------------------------------------------
def identity_target(root: StorageRoot, name: str) -> tuple[Target, Identity]:
    """The target of erasing a registered person, or of the unfinished erasure of that name (`NotFoundError`
    for a name the registry lacks)."""
    try:
        key = digest(name_key(name))
    except FacescaleError:
        key = digest(name)
    records = root.erasures.list()
    for record in records:
        if record.status == "planned" and key in record.target.identity_keys:  # a killed run: resume it
            work = record.work
            return record.target, Identity(name=work["name"], slug=work["slug"], label=record.target.label or 0)
    try:
        identity = root.registry.get(name)
    except NotFoundError:
        if any(key in r.target.identity_keys for r in records):
            raise NotFoundError(f"identity {name!r} is already erased") from None
        raise
    keys = sorted({digest(name_key(identity.name)), digest(identity.slug)})
    return Target(kind="identity", identity_keys=keys, label=identity.label), identity


def photos_target(refs: Iterable[str]) -> Target:
    """The target of erasing photos given by image id (sha256 hex) or source URL."""
    refs = [r.strip() for r in refs]
    if not refs or any(not r for r in refs):
        raise FacescaleError("no photos given: pass image ids (sha256) or source URLs")
    bad = [r for r in refs if not is_image_id(r) and "://" not in r]
    if bad:
        raise FacescaleError(f"{bad[0]!r} is neither an image id (64 hex digits) nor a source URL")
    return Target(
        kind="photos",
        image_ids=sorted({r for r in refs if is_image_id(r)}),
        url_hashes=sorted({digest(r) for r in refs if not is_image_id(r)}),
    )


def erase(
    root: StorageRoot, target: Target, *, requested_by: str, reason: str, identity: Identity | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ErasureRecord:
    """Carry out the erasure of ``target`` (resuming an unfinished one of the same target); see the module doc.

    Raises:
        NotFoundError: photos that no store holds.
        ConflictError: curation (or another erasure) holds the store.
    """
    store = ErasureStore(root.location)
    with store_lease(root.location, "erasure"):
        record = next((r for r in store.list() if r.status == "planned" and r.target == target), None)
        if record is None:
            record = _plan(root, store, target, requested_by, reason, identity)
        eraser = _Eraser(root, store, record)
        for step, run in eraser.steps():
            if step in record.steps:
                continue
            if on_step:
                on_step(step)
            run()
            record.steps.append(step)
            store.save(record)
        record.status, record.finished_at, record.work = "done", utcnow(), {}
        record.found.slugs = []
        store.save(record)
        log.info("erasure %s done: %s", record.erasure_id, record.removed)
        return record


def _plan(
    root: StorageRoot, store: ErasureStore, target: Target, requested_by: str, reason: str, identity: Identity | None
) -> ErasureRecord:
    slug = identity.slug if identity is not None else None
    raw = root.raw
    # Every row `_raw_mask` matches (the person's, the asked ids and URLs, then every row holding bytes or a URL
    # found so far), pass after pass until a pass finds nothing more: what the RAW step will erase, exactly.
    matching = Found(image_ids=sorted(target.image_ids), url_hashes=sorted(target.url_hashes))
    while True:
        ids, urls = set(matching.image_ids), set(matching.url_hashes)
        slugs: set[str] = set()
        hits: dict[str, str] = {}
        for path, info in _raw_shards(root):
            for batch in _batches(raw.location, path, RAW_COLUMNS):
                mask = _raw_mask(batch, matching, slug)
                if mask.any():
                    rows = batch.filter(pa.array(mask)).to_pydict()
                    ids.update(i for i in rows["image_id"] if i)
                    urls.update(digest(u) for u in rows["source_url"])
                    slugs.update(rows["identity_slug"])
                    hits[_rel(raw.location, path)] = info.sha256
        if ids == set(matching.image_ids) and urls == set(matching.url_hashes):
            break
        matching = Found(image_ids=sorted(ids), url_hashes=sorted(urls))
    if not hits and target.kind == "photos":
        raise NotFoundError("no stored photo has those image ids or source URLs: nothing erased")
    found = Found(image_ids=sorted(ids), url_hashes=sorted(urls), slugs=sorted(slugs), raw_shards=hits)
    erased_ids = pa.array(sorted(ids), pa.string())
    crops = root.crops
    keys: set[str] = set()
    embeddings: set[str] = set()
    for chunk in crops.records():
        for info in chunk.shards:
            path = posixpath.join(crops.chunk_dir(chunk.chunk_id), info.path)
            hit = False
            for batch in _batches(crops.location, path, ["image_id", "phash", "embedding"]):
                mask = np.asarray(pc.is_in(batch.column("image_id"), erased_ids).fill_null(False))
                if mask.any():
                    hit = True
                    rows = batch.filter(pa.array(mask)).to_pydict()
                    keys.update(p.hex() for p in rows["phash"] if p)
                    embeddings.update(embedding_digest(e) for e in rows["embedding"] if e)
            if hit:
                found.crop_shards[f"{chunk.chunk_id}/{info.path}"] = info.sha256
    found.perceptual_keys, found.embedding_digests = sorted(keys), sorted(embeddings)
    datasets = root.datasets
    for manifest in datasets.list():
        for info in manifest.shards:
            path = posixpath.join(datasets.version_dir(manifest.version_id), info.path)
            if any(_curated_mask(b, found, slug).any() for b in _batches(datasets.location, path, CURATED_COLUMNS)):
                found.version_shards[f"{manifest.version_id}/{info.path}"] = info.sha256
        if slug is not None and f'"{slug}"' in manifest.to_json().decode():  # kept, waiting or in any note
            found.versions.append(manifest.version_id)
    found.versions = sorted({*found.versions, *(k.split("/", 1)[0] for k in found.version_shards)})
    found.models = [m.model_id for m in root.models.list() if m.version_id in found.versions]
    found.exports = [e for e in exports_of(root.location) if e.get("version_id") in found.versions]
    now = utcnow()
    record = ErasureRecord(
        erasure_id=f"erasure-{now:%Y%m%dT%H%M%SZ}-{target.key()}", target=target, requested_by=requested_by,
        reason=reason, requested_at=now, found=found,
        work={"name": identity.name, "slug": identity.slug} if identity is not None else {},
    )
    store.save(record)
    log.info("erasure %s planned: %d images, %d RAW shards, %d crop shards, %d version shards, %d models",
             record.erasure_id, len(found.image_ids), len(found.raw_shards), len(found.crop_shards),
             len(found.version_shards), len(found.models))
    return record


class _Eraser:
    """The steps of one planned erasure (each safe to run again)."""

    def __init__(self, root: StorageRoot, store: ErasureStore, record: ErasureRecord) -> None:
        self.root, self.store, self.record = root, store, record
        self.found = record.found
        self.slug: str | None = record.work.get("slug")
        self.name: str | None = record.work.get("name")
        self.label = record.target.label if record.target.kind == "identity" else None
        self.ids = pa.array(self.found.image_ids, pa.string())
        self.removed: Counter[str] = Counter(record.removed)

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        return [("raw", self.raw), ("crops", self.crops), ("versions", self.versions), ("models", self.models),
                ("rest", self.rest)]

    def _count(self, what: str, n: int) -> None:
        self.removed[what] += n
        self.record.removed = dict(self.removed)

    # -- RAW -------------------------------------------------------------------------------------------
    def raw(self) -> None:
        raw = self.root.raw
        by_run = _by_entry(self.found.raw_shards)
        if self.name is not None:  # a run that found nothing of the person still names them in its units
            by_run.update({r: by_run.get(r, []) for r in raw.run_ids()})
        for run_id, shards in sorted(by_run.items()):
            record = raw.get(run_id)
            directory = raw.run_dir(run_id)
            infos = {s.path: s for s in record.shards}
            for shard in shards:
                info = infos[shard]
                infos[shard] = self._rewrite(raw.location, directory, info, RAW_SCHEMA, "raw", RAW_COLUMNS,
                                             lambda b: _raw_mask(b, self.found, self.slug))
            update: dict[str, Any] = {"shards": [infos[s.path] for s in record.shards]}
            if self.name is not None:  # the units it finished (keywords, slugs) and its notes name the person
                people = {self.name, self.slug or self.name}
                update.update(completed=[u for u in record.completed if u not in people],
                              meta=scrub(record.meta, people))
            updated = record.model_copy(update=update)
            if updated != record:
                raw.location.write_bytes_atomic(posixpath.join(directory, layout.RUN_FILE),
                                                updated.model_dump_json(indent=2).encode())

    def _rewrite(
        self, location: Location, directory: str, info: ShardInfo, schema: pa.Schema, what: str,
        columns: list[str], erased: Callable[[pa.RecordBatch], np.ndarray],
    ) -> ShardInfo:
        """The shard without its erased rows (``erased``: a mask over ``columns``; rewritten only if it holds
        some), as its record must say."""
        path = posixpath.join(directory, info.path)
        mask = np.concatenate([erased(b) for b in _batches(location, path, columns)] or [np.zeros(0, bool)])
        if mask.any():
            self._count(what, int(mask.sum()))
            return rewrite_shard(location, directory, info, schema, pa.array(~mask))
        sha = sha256_file(location, path)  # rewritten by a run that was killed before its record
        if sha == info.sha256:
            return info
        with os_errors(path, location), location.fs.open(path, "rb") as fh:
            rows = pq.ParquetFile(fh).metadata.num_rows
        return ShardInfo(path=info.path, rows=rows, bytes=location.fs.size(path), sha256=sha)

    # -- the crop cache ----------------------------------------------------------------------------------
    def crops(self) -> None:
        from .crops import raw_shard_key

        raw, crops = self.root.raw, self.root.crops
        renamed: dict[str, str] = {}  # a RAW shard's key when planned -> its key now
        for key, old_sha in self.found.raw_shards.items():
            run_id, shard = key.split("/", 1)
            now = next(s for s in raw.get(run_id).shards if s.path == shard)
            old = raw_shard_key(run_id, ShardInfo(path=shard, rows=0, bytes=0, sha256=old_sha))
            renamed[old] = raw_shard_key(run_id, now)
        by_chunk = _by_entry(self.found.crop_shards)
        for chunk in crops.records():
            infos = {s.path: s for s in chunk.shards}
            for shard in by_chunk.get(chunk.chunk_id, []):
                infos[shard] = self._rewrite(crops.location, crops.chunk_dir(chunk.chunk_id), infos[shard],
                                             CROP_SCHEMA, "crops", ["image_id"],
                                             lambda b: np.asarray(pc.is_in(b.column("image_id"), self.ids)))
            updated = chunk.model_copy(update={
                "shards": [infos[s.path] for s in chunk.shards],
                "raw_shards": [renamed.get(k, k) for k in chunk.raw_shards],
            })
            if updated != chunk:
                crops.location.write_bytes_atomic(posixpath.join(crops.chunk_dir(chunk.chunk_id), layout.CHUNK_FILE),
                                                  updated.model_dump_json(indent=2).encode())

    # -- dataset versions --------------------------------------------------------------------------------
    def versions(self) -> None:
        datasets = self.root.datasets
        by_version: dict[str, list[str]] = {v: [] for v in self.found.versions} | _by_entry(self.found.version_shards)
        for version_id, shards in sorted(by_version.items()):
            manifest = datasets.get(version_id)
            directory = datasets.version_dir(version_id)
            infos = {s.path: s for s in manifest.shards}
            for shard in shards:
                infos[shard] = self._rewrite(datasets.location, directory, infos[shard], CURATED_SCHEMA, "samples",
                                             CURATED_COLUMNS, lambda b: _curated_mask(b, self.found, self.slug))
            updated = self._manifest(manifest, [infos[s.path] for s in manifest.shards])
            self._decoded(updated)
            self._validation(version_id)
            if updated.published:
                names = datasets.label_names(updated)
                if self.record.target.label is not None and self.record.target.label < len(names):
                    names[self.record.target.label] = tombstone_name(self.record.target.label)
                datasets.write_card(updated, names=names)
            datasets.location.write_bytes_atomic(datasets.manifest_path(version_id), updated.to_json())

    def _manifest(self, manifest: Manifest, shards: list[ShardInfo]) -> Manifest:
        """The manifest of the rewritten shards: counts recounted, an erased person's entry and notes gone."""
        datasets = self.root.datasets
        directory = datasets.version_dir(manifest.version_id)
        counts: Counter[tuple[int, str]] = Counter()
        sources: dict[int, set[str]] = {}
        for info in shards:
            for batch in _batches(datasets.location, posixpath.join(directory, info.path),
                                  ["label", "split", "source_image_id"]):
                rows = batch.to_pydict()
                counts.update(zip(rows["label"], rows["split"], strict=True))
                for label, source in zip(rows["label"], rows["source_image_id"], strict=True):
                    sources.setdefault(label, set()).add(source)
        identities = []
        for entry in manifest.identities:
            if entry.slug == self.slug:
                continue
            recount = {s: counts[entry.label, s] for s in entry.counts}
            identities.append(entry.model_copy(update={
                "counts": recount,
                "sources": None if entry.sources is None else len(sources.get(entry.label, ())),
            }))
        notes = json.loads(json.dumps(manifest.notes))
        if self.slug is not None:
            curation = notes.get("curation") or {}
            for section in ("identities", "waiting"):
                (curation.get(section) or {}).pop(self.slug, None)
        erasures = notes.setdefault("erasures", [])
        if self.record.erasure_id not in erasures:
            erasures.append(self.record.erasure_id)
        return manifest.model_copy(update={"shards": shards, "identities": identities, "notes": notes})

    def _validation(self, version_id: str) -> None:
        """The gate's result and Data Docs without the person (its expectations list every slug)."""
        if self.name is None or self.slug is None:
            return
        datasets = self.root.datasets
        location, people = datasets.location, {self.name, self.slug}
        directory = posixpath.join(datasets.version_dir(version_id), layout.VALIDATION_DIR)
        if not location.exists(directory):
            return
        for path in location.fs.find(directory):
            if path.endswith(".json"):
                data = location.read_bytes(path)
                if any(p.encode() in data for p in people):
                    location.write_bytes_atomic(path, json.dumps(scrub(json.loads(data), people), indent=2).encode())
            elif path.endswith(".html"):
                text = location.read_bytes(path).decode("utf-8", "replace")
                if any(p in text for p in people):
                    for p in sorted(people, key=len, reverse=True):
                        text = text.replace(p, "(erased)")
                    location.write_bytes_atomic(path, text.encode())

    def _decoded(self, manifest: Manifest) -> None:
        """``validation/decoded.parquet`` (the gate's sha256 and size of every sample) keeps the samples left."""
        datasets = self.root.datasets
        path = posixpath.join(datasets.version_dir(manifest.version_id), "validation", "decoded.parquet")
        if not datasets.location.exists(path):
            return
        left = {
            hashlib.sha256(image).digest()
            for batch in datasets.iter_batches(manifest.version_id, columns=["image"], batch_size=512)
            for image in batch.column("image").to_pylist()
        }
        with os_errors(path, datasets.location), datasets.location.fs.open(path, "rb") as fh:
            table = pq.read_table(fh)
        keep = pa.array([bytes(s) in left for s in table.column("sha256").to_pylist()], pa.bool_())
        if pc.all(keep).as_py():
            return
        buffer = io.BytesIO()
        pq.write_table(table.filter(keep), buffer)
        datasets.location.write_bytes_atomic(path, buffer.getvalue())

    # -- models ------------------------------------------------------------------------------------------
    def models(self) -> None:
        registry = self.root.models
        location = registry.location
        for model_id in self.found.models:
            record = registry.get(model_id)
            files = {f.path: f for f in record.files}
            base = registry.files_dir(model_id)
            changed: dict[str, bytes | None] = {}  # path -> new bytes (None: removed)
            for path in files:
                full = posixpath.join(base, path)
                if path.startswith(GALLERY_PREFIX) and path.endswith(".npz"):
                    data = self._gallery(location.read_bytes(full))
                    if data is not None:
                        changed[path] = data
                elif path in PHOTO_PLOTS or (self.slug is not None and path in NAME_PLOTS):
                    changed[path] = None
                elif self.slug is not None and (path == "labels.json" or path in NAMED_JSON):
                    before = location.read_bytes(full)
                    doc = json.loads(before)
                    if path == "labels.json":
                        doc.get("labels", {}).pop(str(self.label), None)
                        scrubbed: Any = doc
                    else:
                        scrubbed = scrub(doc, {self.slug, self.name or self.slug})
                    data = json.dumps(scrubbed, indent=2, sort_keys=path != "labels.json").encode()
                    if data != before:
                        changed[path] = data
            new_files = []
            for path, info in files.items():
                full = posixpath.join(base, path)
                if path in changed and changed[path] is None:
                    location.remove_file(full)
                    self._count("model files", 1)
                    continue
                data = changed.get(path)
                if data is not None:
                    location.write_bytes_atomic(full, data)
                    info = info.model_copy(update={"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
                new_files.append(info)
            notes = dict(record.notes)
            erasures = [*notes.get("erasures", [])]
            if self.record.erasure_id not in erasures:
                erasures.append(self.record.erasure_id)
            notes.update(erasures=erasures, retrain=True)
            updated = record.model_copy(update={"files": new_files, "notes": notes})
            if updated != record:
                location.write_bytes_atomic(registry.record_path(model_id), updated.to_json())

    def _gallery(self, data: bytes) -> bytes | None:
        """An enrolled gallery without the erased photos (None: nothing to drop)."""
        with np.load(io.BytesIO(data)) as npz:
            arrays = {k: npz[k] for k in npz.files}
        labels = arrays["labels"]
        if "ids" in arrays:
            drop = np.isin(arrays["ids"].astype(str), self.found.image_ids)
            if self.label is not None:
                drop |= labels == self.label
        else:  # saved before galleries kept their photos' ids: every row of the affected identities goes
            affected = {self.label} if self.label is not None else self._labels_of_erased()
            drop = np.isin(labels, sorted(affected))
        if not drop.any():
            return None
        self._count("enrolled embeddings", int(drop.sum()))
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{k: v[~drop] for k, v in arrays.items()})
        return buffer.getvalue()

    def _labels_of_erased(self) -> set[int]:
        registry = {i.slug: i.label for i in self.root.registry.load()}
        return {registry[s] for s in self.found.slugs if s in registry}

    # -- the rest --------------------------------------------------------------------------------------
    def rest(self) -> None:
        root = self.root
        location = root.location
        if self.slug is not None:
            root.registry.erase(self.slug)
        dropped = root.exclusions.drop(self.found.image_ids, self.slug)
        self._count("exclusions", dropped)
        plans = root.plans.location
        people = {self.name, self.slug or self.name} if self.name is not None else set()
        for file in plans.list_files(plans.root) if people else []:
            if file.endswith(".json") and not file.startswith("_"):
                stored = json.loads(plans.read_bytes(plans.path(file)))
                doc = scrub(stored, people)
                if doc != stored:
                    plans.write_bytes_atomic(plans.path(file), json.dumps(doc, indent=2).encode())
                    self._count("plans", 1)
        self._count("review table", root.review.drop(self.found.image_ids, self.slug))
        sheets = location.child(layout.SHEETS_DIR)
        for slug in self.found.slugs:
            if sheets.exists(sheets.path(f"{slug}.html")):
                sheets.remove_file(sheets.path(f"{slug}.html"))
                self._count("contact sheets", 1)
        if self.slug is not None:
            sheets.remove_file(sheets.path("index.html"))
        for index in DERIVED_INDEXES:
            location.remove_file(location.path(index))


# -- verification ------------------------------------------------------------------------------------
def verify(root: StorageRoot, record: ErasureRecord, names: Iterable[str] = ()) -> dict[str, int]:
    """Every place in the store still holding what ``record`` erased: store -> matches (all zero when clean).

    ``names``: the erased person's name (and any other spelling) as the operator gives it: the record keeps
    only its hash, so only then are the store's text files (records, cards, sheets, plots' metadata) searched
    for it and its slug.
    """
    found = record.found
    ids = pa.array(found.image_ids, pa.string())
    urls, keys = set(found.url_hashes), set(found.perceptual_keys)
    embeddings, people = set(found.embedding_digests), set(record.target.identity_keys)
    hits: Counter[str] = Counter()

    def person(values: Iterable[str]) -> int:
        return sum(digest(v) in people or _name_digest(v) in people for v in values) if people else 0

    for path, _info in _raw_shards(root):
        for batch in _batches(root.raw.location, path, ["image_id", "source_url", "identity", "identity_slug"]):
            hits["raw: image ids"] += int(pc.sum(pc.is_in(batch.column("image_id"), ids)).as_py() or 0)
            hits["raw: source urls"] += sum(digest(u) in urls for u in batch.column("source_url").to_pylist())
            hits["raw: the person"] += person(batch.column("identity_slug").to_pylist())
    crops = root.crops
    for path in crops.shard_paths(crops.records()):
        for batch in _batches(crops.location, path, ["image_id", "phash", "embedding", "identity_slug"]):
            hits["crops: image ids"] += int(pc.sum(pc.is_in(batch.column("image_id"), ids)).as_py() or 0)
            hits["crops: perceptual keys"] += sum(
                p is not None and p.hex() in keys for p in batch.column("phash").to_pylist())
            hits["crops: embeddings"] += sum(
                e is not None and embedding_digest(e) in embeddings for e in batch.column("embedding").to_pylist())
            hits["crops: the person"] += person(batch.column("identity_slug").to_pylist())
    datasets = root.datasets
    for manifest in datasets.list():
        hits["versions: the person"] += person(e.slug for e in manifest.identities)
        for path in datasets.shard_paths(manifest):
            for batch in _batches(datasets.location, path, ["source_image_id", "identity_slug"]):
                hits["versions: image ids"] += int(pc.sum(pc.is_in(batch.column("source_image_id"), ids)).as_py() or 0)
                hits["versions: the person"] += person(batch.column("identity_slug").to_pylist())
    registry = root.models
    for model in registry.list():
        base = registry.files_dir(model.model_id)
        for f in model.files:
            full = posixpath.join(base, f.path)
            if f.path.startswith(GALLERY_PREFIX) and f.path.endswith(".npz"):
                with np.load(io.BytesIO(registry.location.read_bytes(full))) as npz:
                    if "ids" in npz.files:
                        hits["models: enrolled photos"] += int(np.isin(npz["ids"].astype(str), found.image_ids).sum())
                    if record.target.label is not None:
                        hits["models: enrolled photos"] += int((npz["labels"] == record.target.label).sum())
            elif f.path == "labels.json" and people:
                doc = json.loads(registry.location.read_bytes(full))
                hits["models: labels"] += person(v.get("slug", "") for v in doc.get("labels", {}).values())
    hits["registry: the person"] += person(i.slug for i in root.registry.load())
    review, _ = root.review.read()
    hits["review: image ids"] += int(pc.sum(pc.is_in(review.column("image_id"), ids)).as_py() or 0)
    hits["review: the person"] += person(review.column("identity_slug").to_pylist())
    hits["exclusions: image ids"] += sum(e.source_image_id in set(found.image_ids) for e in root.exclusions.load())
    plans = root.plans.location
    for file in plans.list_files(plans.root):
        if file.endswith(".json") and not file.startswith("_"):
            hits["plans: the person"] += person(_strings(json.loads(plans.read_bytes(plans.path(file)))))
    texts = {t for n in names for t in (n, make_slug(n)) if t.strip()}
    if texts:
        location = root.location
        for path in location.fs.find(location.root):
            if posixpath.basename(path) == RECORD_FILE or not path.endswith((".json", ".md", ".html", ".txt")):
                continue
            content = location.read_bytes(path).decode("utf-8", "replace")
            hits["text files: the name"] += sum(t in content for t in texts)
    return {k: v for k, v in sorted(hits.items())}


# -- helpers -----------------------------------------------------------------------------------------
def scrub(doc: Any, names: set[str]) -> Any:
    """A JSON document without ``names``: object keys equal to one, and list items equal to one or objects
    holding one anywhere inside (a confused pair naming the person goes whole), are dropped."""
    if isinstance(doc, dict):
        return {k: scrub(v, names) for k, v in doc.items() if k not in names}
    if isinstance(doc, list):
        return [scrub(v, names) for v in doc if not (isinstance(v, str | dict) and names & set(_values(v)))]
    return doc


def exports_of(location: Location) -> list[dict[str, str]]:
    """The exports recorded under ``<root>/exports`` (`storage.export` records each when it starts)."""
    exports = location.child(layout.EXPORTS_DIR)
    found = []
    for file in exports.list_files(exports.root):
        if file.endswith(".json"):
            found.append(json.loads(exports.read_bytes(exports.path(file))))
    return sorted(found, key=lambda e: e.get("started_at", ""))


def _values(doc: Any) -> Iterator[str]:
    """Every string value in a JSON document (object keys left out)."""
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for v in doc.values():
            yield from _values(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _values(v)


def _strings(doc: Any) -> Iterator[str]:
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for k, v in doc.items():
            yield k
            yield from _strings(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _strings(v)


def _name_digest(value: str) -> str:
    try:
        return digest(name_key(value))
    except FacescaleError:
        return ""


def _raw_shards(root: StorageRoot) -> Iterator[tuple[str, ShardInfo]]:
    raw = root.raw
    for record in raw.list():
        for info in record.shards:
            yield posixpath.join(raw.run_dir(record.run_id), info.path), info


def _rel(location: Location, path: str) -> str:
    return posixpath.relpath(path, location.root)


def _batches(location: Location, path: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    from .shards import iter_batches

    yield from iter_batches(location, [path], columns, batch_size=8192)


def _by_entry(keys: Iterable[str]) -> dict[str, list[str]]:
    """``"<entry>/<shard>"`` keys (a run's, a chunk's or a version's shards) grouped by entry."""
    grouped: dict[str, list[str]] = {}
    for key in keys:
        entry, shard = key.split("/", 1)
        grouped.setdefault(entry, []).append(shard)
    return grouped


def _raw_mask(batch: pa.RecordBatch, found: Found, slug: str | None) -> np.ndarray:
    columns = batch.to_pydict()
    ids, urls = set(found.image_ids), set(found.url_hashes)
    return np.array([
        (slug is not None and s == slug) or (i is not None and i in ids) or digest(u) in urls
        for s, i, u in zip(columns["identity_slug"], columns["image_id"], columns["source_url"], strict=True)
    ], bool)


def _curated_mask(batch: pa.RecordBatch, found: Found, slug: str | None) -> np.ndarray:
    ids = set(found.image_ids)
    columns = batch.to_pydict()
    return np.array([
        (slug is not None and s == slug) or i in ids
        for i, s in zip(columns["source_image_id"], columns["identity_slug"], strict=True)
    ], bool)
