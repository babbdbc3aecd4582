"""CURATED dataset versions: write shards, then commit the manifest atomically.

A version directory without ``manifest.json`` is an unfinished write: readers never list
it, and the next write of the same version id clears it first. Committed versions are
immutable, except that `DatasetStore.publish` records the validation outcome (an atomic
replace of the manifest, shards untouched).
"""

from __future__ import annotations

import builtins
import logging
import posixpath
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import EllipsisType
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from facescale.errors import ConflictError, ManifestError

from . import layout
from .committed import committed_ids, read_record, uncommitted_ids
from .crops import CropStore
from .fs import Location, os_errors
from .identities import IdentityRegistry
from .listing import ListingIndex
from .manifest import IdentityEntry, Manifest, ValidationSummary, check_id, utcnow
from .raw import RawStore
from .schemas import CURATED_SCHEMA
from .shards import ShardInfo, ShardSizing, ShardTarget, ShardWriter, iter_batches, verify_shard

log = logging.getLogger(__name__)


def new_version_id(now: datetime | None = None) -> str:
    """A sortable, unique version id such as ``20261123T180501Z-3fa9c1``."""
    stamp = (now or utcnow()).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


class VersionStamp(BaseModel):
    """What never changes once a version is committed: its id and creation time (the listing index's entry)."""

    version_id: str
    created_at: datetime


class GrowthPoint(BaseModel):
    """One version as the growth view plots it (kept in ``datasets/_growth.json`` once published)."""

    version_id: str
    created_at: datetime
    published_at: datetime | None
    identities: int
    samples: int
    splits: dict[str, int]
    removed: dict[str, int]  # photos left out by curation, by reason (``notes.curation.rejected``)
    waiting: int  # identities still short of clean photos

    @property
    def published(self) -> bool:
        return self.published_at is not None

    @classmethod
    def of(cls, manifest: Manifest) -> GrowthPoint:
        notes = manifest.curation_notes()
        return cls(
            version_id=manifest.version_id,
            created_at=manifest.created_at,
            published_at=manifest.published_at,
            identities=len(manifest.identities),
            samples=manifest.rows,
            splits=manifest.split_counts(),
            removed=dict(notes.rejected),
            waiting=len(notes.waiting),
        )


GROWTH_INDEX = "_growth.json"


class DatasetStore:
    """The CURATED dataset versions under ``<root>/datasets``."""

    def __init__(
        self, location: Location, sizing: ShardSizing | None = None, *, raw: RawStore | None = None,
        crops: CropStore | None = None,
    ) -> None:
        """``raw`` and ``crops``: the stores of the same root a card's lineage is read from (`storage.card`);
        `StorageRoot` hands its own, and a store made alone reads those of its root."""
        self.root = location
        self.location = location.child(layout.DATASETS_DIR)
        self.sizing = sizing or ShardSizing()
        self._raw = raw
        self._crops = crops

    # -- reading ---------------------------------------------------------------------------
    def version_dir(self, version_id: str) -> str:
        return self.location.path(check_id(version_id, "dataset version"))

    def manifest_path(self, version_id: str) -> str:
        return posixpath.join(self.version_dir(version_id), layout.MANIFEST_FILE)

    def version_ids(self) -> list[str]:
        """Ids of committed versions (those whose manifest exists), sorted."""
        return committed_ids(self.location, layout.MANIFEST_FILE)

    def list(self) -> list[Manifest]:
        """Committed versions, oldest first."""
        return sorted((self.get(v) for v in self.version_ids()), key=lambda m: (m.created_at, m.version_id))

    def get(self, version_id: str) -> Manifest:
        path = self.manifest_path(version_id)
        manifest = read_record(self.location, path, Manifest, "manifest", f"unknown dataset version {version_id!r}")
        if manifest.version_id != version_id:
            raise ManifestError(
                f"malformed manifest {self.location.display(path)}: it names version {manifest.version_id!r}"
            )
        return manifest

    def exists(self, version_id: str) -> bool:
        """Whether version ``version_id`` is committed (one request, whatever the store's history)."""
        return self.location.exists(self.manifest_path(version_id))

    def latest(self, published_only: bool = True) -> Manifest | None:
        """The newest committed version (published, unless ``published_only`` is off).

        The versions' ids and creation times come from the listing index (they never change), so
        this reads the newest manifests only, newest first, until one qualifies: one read a
        night, not one per version the store holds.
        """
        stamps = ListingIndex(self.location, VersionStamp, self._stamp).records().values()
        for stamp in sorted(stamps, key=lambda v: (v.created_at, v.version_id), reverse=True):
            manifest = self.get(stamp.version_id)
            if manifest.published or not published_only:
                return manifest
        return None

    def growth(self) -> builtins.list[GrowthPoint]:
        """Every published version's size and removals, oldest first.

        Through a listing index of its own (``_growth.json``): a published version's point never
        changes, so drawing the growth view reads one file plus the versions published since.
        """
        points = ListingIndex(
            self.location, GrowthPoint, lambda v: GrowthPoint.of(self.get(v)), final=lambda p: p.published,
            name=GROWTH_INDEX,
        ).records().values()
        return sorted((p for p in points if p.published), key=lambda p: (p.created_at, p.version_id))

    def _stamp(self, version_id: str) -> VersionStamp:
        return VersionStamp(version_id=version_id, created_at=self.get(version_id).created_at)

    def shard_paths(self, manifest: Manifest) -> builtins.list[str]:
        base = self.version_dir(manifest.version_id)
        return [posixpath.join(base, s.path) for s in manifest.shards]

    def iter_batches(
        self, version_id: str, columns: Sequence[str] | None = None, batch_size: int = 256
    ) -> Iterator[pa.RecordBatch]:
        manifest = self.get(version_id)
        yield from iter_batches(self.location, self.shard_paths(manifest), columns, batch_size)

    def verify(self, version_id: str) -> Manifest:
        """Check every shard of a version against its manifest; raise IntegrityError if off."""
        manifest = self.get(version_id)
        base = self.version_dir(version_id)
        for shard in manifest.shards:
            verify_shard(self.location, base, shard)
        return manifest

    # -- writing ---------------------------------------------------------------------------
    def create(
        self,
        version_id: str | None = None,
        *,
        parent: str | EllipsisType | None = ...,
        config: Mapping[str, Any] | None = None,
    ) -> VersionWriter:
        """Start writing a new version. Nothing is visible until `VersionWriter.commit`.

        ``parent`` defaults (``...``) to the newest committed version; ``None`` starts a root version.
        """
        version_id = version_id or new_version_id()
        if self.location.exists(self.manifest_path(version_id)):
            raise ConflictError(f"dataset version {version_id!r} already exists")
        if isinstance(parent, EllipsisType):
            newest = self.latest(published_only=False)
            parent = newest.version_id if newest else None
        if parent is not None:
            self.get(parent)  # must exist
        directory = self.version_dir(version_id)
        if self.location.exists(directory):
            log.warning("clearing unfinished write of version %s", version_id)
            self.location.remove_tree(directory)
        self.location.makedirs(directory)
        return VersionWriter(self, version_id, parent, dict(config or {}))

    def publish(self, version_id: str, validation: ValidationSummary) -> Manifest:
        """Record the validation outcome; a successful one makes the version published.

        A published version's dataset card (`storage.card`) is written first, then the manifest
        that publishes it: a crash between the two leaves an unpublished version, never a
        published one without its card.
        """
        manifest = self.get(version_id)
        updated = manifest.model_copy(
            update={"validation": validation, "published_at": utcnow() if validation.success else None}
        )
        if updated.published:
            self.write_card(updated)
        self.location.write_bytes_atomic(self.manifest_path(version_id), updated.to_json())
        return updated

    def card_path(self, version_id: str) -> str:
        return posixpath.join(self.version_dir(version_id), layout.CARD_FILE)

    def write_card(self, manifest: Manifest, **options: Any) -> str:
        """(Re)write version ``manifest``'s dataset card (``options``: `render_card`'s); returns its path."""
        path = self.card_path(manifest.version_id)
        self.location.write_bytes_atomic(path, self.card_text(manifest, **options).encode())
        return path

    def card_text(self, manifest: Manifest, **options: Any) -> str:
        """Version ``manifest``'s dataset card (`storage.card.card_text`; ``options``: `render_card`'s)."""
        from .card import card_text

        raw = self._raw if self._raw is not None else RawStore(self.root)
        crops = self._crops if self._crops is not None else CropStore(self.root)
        options.setdefault("names", self.label_names(manifest))
        return card_text(raw, crops, manifest, **options)

    def label_names(self, manifest: Manifest) -> builtins.list[str]:
        """Version ``manifest``'s ``ClassLabel`` names (`storage.card.label_names`, gaps named by the registry)."""
        from .card import label_names

        registry = {i.label: i.name for i in IdentityRegistry(self.root).load()}
        return label_names(manifest, registry)

    def uncommitted(self) -> builtins.list[str]:
        """Version directories left behind by writes that never committed."""
        return uncommitted_ids(self.location, layout.MANIFEST_FILE)


class VersionWriter:
    """Writes the shards of one version, then commits its manifest (context manager)."""

    def __init__(self, store: DatasetStore, version_id: str, parent: str | None, config: dict[str, Any]) -> None:
        self.store = store
        self.version_id = version_id
        self.parent = parent
        self.config = config
        self.directory = store.version_dir(version_id)
        shards_dir = posixpath.join(self.directory, layout.SHARDS_DIR)
        self._shards = ShardWriter(store.location, shards_dir, CURATED_SCHEMA, store.sizing)
        self.target = ShardTarget(store.location, shards_dir, CURATED_SCHEMA, store.sizing)
        self._adopted: list[ShardInfo] = []
        self.manifest: Manifest | None = None

    def __enter__(self) -> VersionWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or self.manifest is None:
            self._shards.abort()

    def write(self, rows: Iterable[Mapping[str, Any]] | pa.Table) -> None:
        self._shards.write(rows)

    def adopt(self, shards: Iterable[ShardInfo]) -> None:
        """Add shards that other processes wrote through `target` (e.g. Ray tasks)."""
        self._adopted.extend(shards)

    def copy_shard(self, source_path: str, info: ShardInfo) -> None:
        """Take another version's shard as it is: the file copied byte for byte under its own name.

        Args:
            source_path: the shard file (a path on this store's filesystem).
            info: its manifest entry (rows, bytes, sha256; ``path`` relative to its manifest).
        """
        name = posixpath.basename(info.path)
        target = posixpath.join(self.target.directory, name)
        self.store.location.makedirs(self.target.directory)
        with os_errors(target, self.store.location, writing=True):
            self.store.location.fs.copy(source_path, target)
        self._adopted.append(info.model_copy(update={"path": name}))

    def commit(self, identities: Sequence[IdentityEntry], notes: Mapping[str, Any] | None = None) -> Manifest:
        """Finish the shards and atomically write the manifest: the version now exists.

        Shard files no list names (left by retried remote writers) are removed first.
        """
        if self.manifest is not None:  # a second commit would rewrite an immutable manifest
            raise ConflictError(f"dataset version {self.version_id!r} is already committed")
        infos = self._shards.close() + sorted(self._adopted, key=lambda info: info.path)
        self.target.sweep(infos)
        shard_infos = [info.model_copy(update={"path": posixpath.join(layout.SHARDS_DIR, info.path)}) for info in infos]
        manifest = Manifest(
            version_id=self.version_id,
            parent=self.parent,
            config=self.config,
            identities=list(identities),
            shards=shard_infos,
            notes=dict(notes or {}),
        )
        self.store.location.write_bytes_atomic(self.store.manifest_path(self.version_id), manifest.to_json())
        self.manifest = manifest
        log.info("committed dataset version %s (%d rows, %d shards)", self.version_id, manifest.rows, len(shard_infos))
        return manifest
