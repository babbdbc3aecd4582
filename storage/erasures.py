"""The erasure records under ``<root>/erasures`` and what they forbid later runs (`Blocklist`).

An erasure record (`ErasureRecord`) says who asked, when and why, and what was removed: image
ids (the bytes' sha256), the sha256 of each erased source URL and of the person's name key and
slug, the perceptual keys and embedding digests `storage.erasure.verify` searches for, counts per
store; never a name, a URL or image bytes once the erasure is done. Carrying one out is
`storage.erasure`.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from facescale.errors import FacescaleError, NotFoundError

from . import layout
from .fs import Location
from .identities import name_key
from .manifest import utcnow
from .records import parse_record

RECORD_FILE = "erasure.json"
#: The reason code of a RAW row whose URL or bytes an erasure took out (the scraper's and ingest's): no bytes kept.
ERASED = "erased"


def digest(text: str) -> str:
    """The sha256 an erasure record keeps instead of a URL, a name or a slug."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def embedding_digest(vector: Iterable[float]) -> str:
    """The sha256 of a stored embedding's float32 bytes (`verify` finds a leftover copy by it)."""
    return hashlib.sha256(np.asarray(list(vector), np.float32).tobytes()).hexdigest()


def is_image_id(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


class Target(BaseModel):
    """What was asked to be erased, without the name or URLs themselves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["identity", "photos"]
    identity_keys: list[str] = Field(default_factory=list)  # sha256 of the person's name key and slug
    label: int | None = None
    image_ids: list[str] = Field(default_factory=list)  # asked image ids
    url_hashes: list[str] = Field(default_factory=list)  # sha256 of asked source URLs

    def key(self) -> str:
        return digest(self.model_dump_json())[:12]


class Found(BaseModel):
    """What the plan found: ids, hashes and the entries to rewrite (shard path -> checksum when planned)."""

    model_config = ConfigDict(extra="forbid")

    image_ids: list[str] = Field(default_factory=list)
    url_hashes: list[str] = Field(default_factory=list)
    perceptual_keys: list[str] = Field(default_factory=list)  # hex of each erased crop's perceptual key
    embedding_digests: list[str] = Field(default_factory=list)
    raw_shards: dict[str, str] = Field(default_factory=dict)  # "<run>/<shard>" -> sha256 when planned
    crop_shards: dict[str, str] = Field(default_factory=dict)  # "<chunk>/<shard>" -> sha256
    version_shards: dict[str, str] = Field(default_factory=dict)  # "<version>/<shard>" -> sha256
    versions: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    exports: list[dict[str, str]] = Field(default_factory=list)  # the exports of affected versions
    slugs: list[str] = Field(default_factory=list)  # identities the rows were filed under (cleared when done)


class ErasureRecord(BaseModel):
    """``erasures/<id>/erasure.json``: who asked, when, what was found and removed; never image bytes."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = 1
    erasure_id: str
    target: Target
    requested_by: str
    reason: str
    requested_at: datetime = Field(default_factory=utcnow)
    status: Literal["planned", "done"] = "planned"
    steps: list[str] = Field(default_factory=list)  # steps finished
    found: Found = Field(default_factory=Found)
    removed: dict[str, int] = Field(default_factory=dict)  # rows or files removed, per store
    finished_at: datetime | None = None
    work: dict[str, Any] = Field(default_factory=dict)  # the person's name and slug while it runs (cleared when done)

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode() + b"\n"


class Blocklist(BaseModel):
    """What no later run may fetch, store or search again (every finished and planned erasure's)."""

    url_hashes: frozenset[str] = frozenset()
    image_ids: frozenset[str] = frozenset()
    identity_keys: frozenset[str] = frozenset()

    def url(self, url: str) -> bool:
        return digest(url) in self.url_hashes

    def name(self, name: str) -> bool:
        return digest(name_key(name)) in self.identity_keys


class ErasureStore:
    """The erasure records under ``<root>/erasures``."""

    def __init__(self, location: Location) -> None:
        self.location = location.child(layout.ERASURES_DIR)

    def path(self, erasure_id: str) -> str:
        return self.location.path(erasure_id, RECORD_FILE)

    def list(self) -> list[ErasureRecord]:
        records = []
        for entry in self.location.list_dirs(self.location.root):
            path = self.path(entry)
            if self.location.exists(path):
                records.append(parse_record(ErasureRecord, self.location.read_bytes(path), "erasure record",
                                            self.location.display(path)))
        return sorted(records, key=lambda r: (r.requested_at, r.erasure_id))

    def get(self, erasure_id: str) -> ErasureRecord:
        path = self.path(erasure_id)
        if not self.location.exists(path):
            raise NotFoundError(f"unknown erasure {erasure_id!r}")
        return parse_record(ErasureRecord, self.location.read_bytes(path), "erasure record",
                            self.location.display(path))

    def save(self, record: ErasureRecord) -> None:
        self.location.write_bytes_atomic(self.path(record.erasure_id), record.to_json())

    def blocklist(self) -> Blocklist:
        records = self.list()
        return Blocklist(
            url_hashes=frozenset(h for r in records for h in [*r.found.url_hashes, *r.target.url_hashes]),
            image_ids=frozenset(i for r in records for i in [*r.found.image_ids, *r.target.image_ids]),
            identity_keys=frozenset(k for r in records for k in r.target.identity_keys),
        )

    def find(self, ref: str) -> builtins.list[ErasureRecord]:
        """The erasures of ``ref``: an erasure id, a person's name or slug, an image id or a source URL."""
        key = digest(ref)
        try:
            person = digest(name_key(ref))
        except FacescaleError:
            person = key
        return [
            r for r in self.list()
            if ref == r.erasure_id or key in r.target.identity_keys or person in r.target.identity_keys
            or ref in r.found.image_ids or key in r.found.url_hashes
        ]
