"""The crop cache: per chunk of RAW shards, the face crops, perceptual keys and embeddings curation made.

Curation is incremental: the expensive per-photo work (detect, crop, hash, embed) is done once
per RAW shard and kept here, so a nightly run only processes the RAW shards no chunk covers
yet. A chunk is a directory ``<root>/curation/crops/<chunk_id>/`` with CROP_SCHEMA shards and a
``chunk.json`` record naming the RAW shards it covers and the fingerprint of the parameters
that made it; the record is written last and atomically, so a chunk without one is an
unfinished write that readers ignore and the next write of the same chunk id clears.
Chunk ids are derived from their contents (`chunk_id`), so a run killed mid-chunk and started
again rewrites the same chunk, never a second copy of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from facescale.errors import ConflictError

from . import layout
from .committed import committed_ids, read_record, uncommitted_ids
from .fs import Location, os_errors
from .listing import ListingIndex
from .manifest import VERSION_ID_PATTERN, check_id, utcnow
from .schemas import CROP_SCHEMA, EMBEDDING_DIM
from .shards import ShardInfo, ShardSizing, ShardTarget, ShardWriter, iter_batches

log = logging.getLogger(__name__)


class ChunkRecord(BaseModel):
    """The committed state of one crop-cache chunk."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = 1
    chunk_id: str = Field(pattern=VERSION_ID_PATTERN)
    params: str = Field(description="fingerprint of the parameters the crops were made with")
    raw_shards: list[str] = Field(description="keys of the RAW shards covered (`raw_shard_key`)")
    shards: list[ShardInfo] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    stats: dict[str, Any] = Field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)


def _may_hold(stats: Any, value: str) -> bool:
    """Whether a row group with these column statistics may hold ``value`` (True when it has none)."""
    if stats is None or not stats.has_min_max:
        return True
    return bool(stats.min <= value <= stats.max)


def raw_shard_key(run_id: str, shard: ShardInfo) -> str:
    """A RAW shard's identity: its run, its path in the run and its checksum."""
    return f"{run_id}/{shard.path}#{shard.sha256[:16]}"


def chunk_id(params: str, raw_shards: Iterable[str]) -> str:
    """The id of the chunk that covers these RAW shards with these parameters (order-free)."""
    payload = json.dumps([params, sorted(raw_shards)]).encode()
    return "chunk-" + hashlib.blake2b(payload, digest_size=12).hexdigest()


class CropStore:
    """Crop-cache chunks under ``<root>/curation/crops``."""

    def __init__(self, location: Location, sizing: ShardSizing | None = None) -> None:
        self.location = location.child(layout.CROPS_DIR)
        self.sizing = sizing or ShardSizing()

    def chunk_dir(self, chunk: str) -> str:
        return self.location.path(check_id(chunk, "crop chunk"))

    def _record_path(self, chunk: str) -> str:
        return posixpath.join(self.chunk_dir(chunk), layout.CHUNK_FILE)

    def chunk_ids(self) -> list[str]:
        """Ids of committed chunks, sorted."""
        return committed_ids(self.location, layout.CHUNK_FILE)

    def get(self, chunk: str) -> ChunkRecord:
        path = self._record_path(chunk)
        return read_record(self.location, path, ChunkRecord, "crop chunk record", f"unknown crop chunk {chunk!r}")

    def records(self) -> list[ChunkRecord]:
        """Every committed chunk, oldest first (through the listing index: records never change once committed)."""
        found = ListingIndex(self.location, ChunkRecord, self.get).records().values()
        return sorted(found, key=lambda c: (c.created_at, c.chunk_id))

    def chunks(self, params: str) -> list[ChunkRecord]:
        """Committed chunks made with these parameters, oldest first."""
        return [c for c in self.records() if c.params == params]

    def covered(self, params: str) -> set[str]:
        """Keys of the RAW shards that chunks with these parameters cover."""
        return {key for c in self.chunks(params) for key in c.raw_shards}

    def shard_paths(self, chunks: Iterable[ChunkRecord]) -> list[str]:
        return [posixpath.join(self.chunk_dir(c.chunk_id), s.path) for c in chunks for s in c.shards]

    def iter_batches(
        self, chunks: Iterable[ChunkRecord], columns: Sequence[str] | None = None, batch_size: int = 1024
    ) -> Iterator[pa.RecordBatch]:
        yield from iter_batches(self.location, self.shard_paths(chunks), columns, batch_size)

    def crops_of(self, chunk: str, identity_slug: str) -> dict[str, bytes]:
        """One identity's crops in one chunk, by image id (the review view's photos).

        Reads only the row groups whose ``identity_slug`` statistics may hold it: a chunk's
        rows are sorted by run, identity and photo, so that is about the identity's own rows.
        """
        found: dict[str, bytes] = {}
        for path in self.shard_paths([self.get(chunk)]):
            with os_errors(path, self.location), self.location.fs.open(path, "rb") as fh:
                parquet = pq.ParquetFile(fh)
                column = parquet.schema_arrow.get_field_index("identity_slug")
                groups = [
                    g for g in range(parquet.num_row_groups)
                    if _may_hold(parquet.metadata.row_group(g).column(column).statistics, identity_slug)
                ]
                if not groups:
                    continue
                table = parquet.read_row_groups(groups, columns=["identity_slug", "image_id", "crop"])
            table = table.filter(pc.and_(pc.equal(table.column("identity_slug"), identity_slug),
                                         pc.is_valid(table.column("crop"))))
            found.update(zip(table.column("image_id").to_pylist(), table.column("crop").to_pylist(), strict=True))
        return found

    def embeddings(self, wanted: Collection[str]) -> dict[str, np.ndarray]:
        """The dlib embedding curation computed of each photo in ``wanted`` the cache holds, as a unit
        ``(128,)`` float32 vector (every use compares directions); a photo cropped under several parameter
        sets has one per chunk, and the newest chunk's wins. Reads the ``image_id`` and ``embedding`` columns
        only."""
        wanted = set(wanted)
        found: dict[str, np.ndarray] = {}
        if not wanted:
            return found
        for batch in self.iter_batches(self.records(), columns=["image_id", "embedding"], batch_size=8192):
            column = batch.column("embedding")
            valid = np.asarray(column.is_valid())
            if not valid.any():
                continue
            ids = batch.column("image_id").to_pylist()
            vectors = np.zeros((len(ids), EMBEDDING_DIM), np.float32)
            vectors[valid] = np.asarray(pc.filter(column, valid).flatten(), np.float32).reshape(-1, EMBEDDING_DIM)
            for image_id, vector, ok in zip(ids, vectors, valid, strict=True):
                if ok and image_id in wanted:
                    found[image_id] = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return found

    def open(self, chunk: str, params: str, raw_shards: Sequence[str]) -> ChunkWriter:
        """Start writing a chunk; an unfinished write of the same id is cleared first."""
        if self.location.exists(self._record_path(chunk)):
            raise ConflictError(f"crop chunk {chunk!r} is already committed")
        directory = self.chunk_dir(chunk)
        if self.location.exists(directory):
            log.info("clearing unfinished crop chunk %s", chunk)
            self.location.remove_tree(directory)
        self.location.makedirs(directory)
        return ChunkWriter(self, ChunkRecord(chunk_id=chunk, params=params, raw_shards=list(raw_shards)))

    def uncommitted(self) -> list[str]:
        """Chunk directories left behind by writes that never committed."""
        return uncommitted_ids(self.location, layout.CHUNK_FILE)


class ChunkWriter:
    """Writes the shards of one chunk, then its record (context manager: not committed = discarded)."""

    def __init__(self, store: CropStore, record: ChunkRecord) -> None:
        self.store = store
        self.record = record
        directory = store.chunk_dir(record.chunk_id)
        self._shards = ShardWriter(store.location, directory, CROP_SCHEMA, store.sizing)
        self.target = ShardTarget(store.location, directory, CROP_SCHEMA, store.sizing)
        self._adopted: list[ShardInfo] = []
        self.committed = False

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.committed:
            self._shards.abort()

    def write(self, rows: Iterable[Mapping[str, Any]] | pa.Table) -> None:
        self._shards.write(rows)

    def adopt(self, shards: Iterable[ShardInfo]) -> None:
        """Add shards that other processes wrote through `target` (e.g. Ray tasks)."""
        self._adopted.extend(shards)

    def commit(self, stats: Mapping[str, Any] | None = None) -> ChunkRecord:
        """Finish the shards and write the record; shard files no list names are removed first."""
        if self.committed:
            raise ConflictError(f"crop chunk {self.record.chunk_id!r} is already committed")
        shards = self._shards.close() + sorted(self._adopted, key=lambda info: info.path)
        self.target.sweep(shards)
        record = self.record.model_copy(update={"shards": shards, "stats": dict(stats or {})})
        self.store.location.write_bytes_atomic(
            self.store._record_path(record.chunk_id), record.model_dump_json(indent=2).encode()
        )
        self.record, self.committed = record, True
        return record
