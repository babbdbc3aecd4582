"""The latest curation's verdict on every photo: ``<root>/curation/review.parquet``, what reviewers read.

Curation writes it whole on every run that decides anything (`pipeline.curate`), beside the
contact sheets: one row per (identity, source photo) it decided about, with the photo's status
(``kept`` or the `pipeline.reasons.Reason` it is out for), its distance to the identity's core
group and its group (wrong-person cleaning), whether a person had reviewed it, and the
crop-cache chunk its crop is in. The schema's metadata carries when it was written, the
cleaning threshold and the version the run made or found. It is metadata only (about 100 bytes
a photo, never the crops): the review view (`facescale.app.review`) reads it to list an
identity's photos and the review queue, and reads each crop from the crop cache by its chunk.

Written atomically (a temporary name, then rename), so a reader sees the last run's table or
the one before, never half of one; an erasure rewrites it without the erased rows.
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import layout
from .fs import Location
from .manifest import utcnow

#: One row per (identity, source photo) the last curation decided about.
REVIEW_SCHEMA = pa.schema(
    [
        pa.field("identity_slug", pa.string(), False),
        pa.field("identity", pa.string(), False),
        pa.field("image_id", pa.string(), False),
        pa.field("status", pa.string(), False),  # "kept", or the reason it is out (spare and waiting included)
        pa.field("distance", pa.float32()),  # median embedding distance to the identity's core group
        pa.field("group", pa.int32()),  # its embedding group, 0 = the core
        pa.field("reviewed", pa.bool_(), False),  # a person had reviewed and kept it
        pa.field("chunk", pa.string()),  # the crop-cache chunk holding its crop
    ],
    metadata={"facescale.schema": "review/1"},
)
KEPT = "kept"


@dataclass(frozen=True)
class ReviewInfo:
    """What the schema's metadata says about the run that wrote the table."""

    written_at: datetime | None  # None: no curation has written the table yet
    threshold: float
    version_id: str | None


class ReviewTable:
    """``curation/review.parquet`` under a storage root."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.path = location.path(layout.REVIEW_FILE)

    def exists(self) -> bool:
        return self.location.exists(self.path)

    def write(self, table: pa.Table, *, threshold: float, version_id: str | None) -> None:
        """Replace the table (rows sorted by identity and photo) with ``table``'s rows."""
        info = {"written_at": utcnow().isoformat(), "threshold": threshold, "version_id": version_id}
        self._save(table.select(REVIEW_SCHEMA.names).cast(REVIEW_SCHEMA), info)

    def read(self, slug: str | None = None) -> tuple[pa.Table, ReviewInfo]:
        """Every row (or one identity's) and the run's info; an empty table before the first curation."""
        if not self.exists():
            return REVIEW_SCHEMA.empty_table(), ReviewInfo(None, float("nan"), None)
        table = self._load(slug)
        info = _info(table.schema)
        return table.cast(REVIEW_SCHEMA), ReviewInfo(
            written_at=datetime.fromisoformat(info["written_at"]) if info.get("written_at") else None,
            threshold=float(info.get("threshold", float("nan"))),
            version_id=info.get("version_id"),
        )

    def _load(self, slug: str | None = None) -> pa.Table:
        data = self.location.read_bytes(self.path)
        return pq.read_table(io.BytesIO(data), filters=None if slug is None else [("identity_slug", "=", slug)])

    def signature(self) -> str | None:
        """Changes whenever the table is rewritten (size and modification time): a key for caches."""
        self.location.fs.invalidate_cache(self.path)  # an object store's listing cache would hide a rewrite
        try:
            info = self.location.fs.info(self.path)  # one call (a HEAD on S3), asked for every photo shown
        except FileNotFoundError:
            return None
        return f"{info.get('size')}:{info.get('mtime') or info.get('LastModified') or info.get('last_modified')}"

    def drop(self, image_ids: Collection[str], slug: str | None = None) -> int:
        """Rewrite the table without these photos and, given ``slug``, that identity (an erasure); returns rows gone."""
        if not self.exists():
            return 0
        table = self._load()
        out = pc.is_in(table.column("image_id"), pa.array(sorted(image_ids), pa.string()))
        if slug is not None:
            out = pc.or_(out, pc.equal(table.column("identity_slug"), slug))
        gone = int(pc.sum(out).as_py() or 0)
        if gone:
            self._save(table.filter(pc.invert(out)).cast(REVIEW_SCHEMA), _info(table.schema))
        return gone

    def _save(self, table: pa.Table, info: dict[str, Any]) -> None:
        table = table.sort_by([("identity_slug", "ascending"), ("image_id", "ascending")])
        table = table.replace_schema_metadata({**(REVIEW_SCHEMA.metadata or {}), "facescale.review": json.dumps(info)})
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self.location.write_bytes_atomic(self.path, buffer.getvalue())


def _info(schema: pa.Schema) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((schema.metadata or {}).get(b"facescale.review", b"{}"))
    return info
