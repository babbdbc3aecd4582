"""The manifest of a CURATED dataset version: identities, shards, config, validation.

A manifest is a JSON document validated by pydantic on read and on write; a file that
does not parse, or parses into something else, raises ManifestError naming the file.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from facescale.errors import ManifestError, NotFoundError

from .records import parse_record
from .schemas import SPLITS, Split
from .shards import ShardInfo

MANIFEST_FORMAT: Final = 1
VERSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_ID_RE = re.compile(VERSION_ID_PATTERN)


def is_valid_id(value: str) -> bool:
    """Whether ``value`` may name a version or run (also a safe directory name)."""
    return _ID_RE.fullmatch(value) is not None


def check_id(value: str, what: str) -> str:
    if not is_valid_id(value):
        raise NotFoundError(f"invalid {what} id {value!r}: use letters, digits, '.', '_' and '-'")
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class IdentityEntry(BaseModel):
    """One identity of a version: its stable label and sample counts per split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    slug: str
    label: int = Field(ge=0)
    counts: dict[Split, int] = Field(default_factory=dict)
    sources: int | None = Field(default=None, ge=0, description="distinct source photos")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class ValidationSummary(BaseModel):
    """The outcome of the data-quality gate run on a version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    success: bool
    suite: str
    validated_at: datetime = Field(default_factory=utcnow)
    statistics: dict[str, Any] = Field(default_factory=dict)
    failures: list[str] = Field(default_factory=list)
    data_docs: str | None = None
    suite_pages: dict[str, str] = Field(default_factory=dict)  # suite -> its result page in the Data Docs


class SelectionNote(BaseModel):
    """One identity's balance decision as a version records it (`pipeline.balance.Selection.to_manifest`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["waiting", "kept", "kept_padded"] = "waiting"
    candidates: int = 0  # clean photos it had
    selected: int = 0  # source photos kept
    shortfall: int = 0  # photos short of per_identity, made up by extra augmented train samples
    needed: int = 0  # more clean photos a waiting identity needs
    removed: dict[str, int] = Field(default_factory=dict)  # photos left out, by reason


class KeptNote(SelectionNote):
    """A kept identity: also the fingerprint of what shapes its samples, and whether they were copied."""

    fingerprint: str
    reused: bool  # its samples were copied from the parent version (same fingerprint)


class CurationNotes(BaseModel):
    """What curation records in ``notes["curation"]``: the contract the next (incremental) build reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content: str | None = None  # digest of every kept identity's fingerprint: equal means nothing changed
    prepare: str | None = None  # the prepare step's fingerprint (crop parameters)
    chunks: list[str] = Field(default_factory=list)  # the crop-cache chunks the version was built from
    identities: dict[str, KeptNote] = Field(default_factory=dict)  # slug -> kept identity
    waiting: dict[str, SelectionNote] = Field(default_factory=dict)  # slug -> identity still short of photos
    rejected: dict[str, int] = Field(default_factory=dict)  # every photo left out, by reason
    padding: str | None = None  # how short identities are padded (for readers of the manifest)


class Manifest(BaseModel):
    """Everything a reader needs to use a version without listing directories."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = MANIFEST_FORMAT
    version_id: str = Field(pattern=VERSION_ID_PATTERN)
    parent: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    kind: Literal["curated"] = "curated"
    config: dict[str, Any] = Field(default_factory=dict)
    identities: list[IdentityEntry] = Field(default_factory=list)
    shards: list[ShardInfo] = Field(default_factory=list)
    validation: ValidationSummary | None = None
    published_at: datetime | None = None
    notes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("identities")
    @classmethod
    def _unique_identities(cls, value: list[IdentityEntry]) -> list[IdentityEntry]:
        for attr in ("name", "slug", "label"):
            seen = [getattr(i, attr) for i in value]
            if len(seen) != len(set(seen)):
                raise ValueError(f"identity {attr}s are not unique")
        return value

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def published(self) -> bool:
        return self.published_at is not None

    def split_counts(self) -> dict[str, int]:
        return {s: sum(i.counts.get(s, 0) for i in self.identities) for s in SPLITS}

    def curation_notes(self) -> CurationNotes:
        """``notes["curation"]``, typed (empty for a version curation did not make); malformed: `ManifestError`."""
        try:
            return CurationNotes.model_validate(self.notes.get("curation") or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(root)"
            raise ManifestError(
                f"malformed manifest of {self.version_id}: notes.curation.{where}: {first['msg']}"
            ) from exc

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        return parse_record(cls, data, "manifest", where)
