"""The persistent exclusion list: source images that curation must leave out, and why.

``<root>/curation/exclusions.json`` holds one entry per (identity, source image): the
automated wrong-person cleaning adds ``source="auto"`` entries, people add ``"manual"``
ones from the review contact sheets. Every later dataset version drops the listed images
of an identity before anything else looks at them, so a decision made once stays made
while the identity grows.

Rules, checked on every edit:

* One entry per ``(identity_slug, source_image_id)``; adding an existing one again changes
  nothing (idempotent; the first ``added_at`` and reason stay).
* A manual entry is never replaced by an automatic one; a manual entry replaces an
  automatic one (a person confirmed or overruled the machine).
* ``reason="reviewed_keep"`` (manual only) records that a person looked at an image the
  cleaner removed and kept it: it is not an exclusion (``excluded()`` leaves it out), but
  being manual it stops the cleaner from excluding that image again (``reviewed_keep()``).
* A manual entry says who made it (``added_by``: the CLI's user, the Airflow user of the
  review view) and keeps the entry it replaced (``replaced``, one level), so ``undo`` puts
  the list back as it was before that decision.

Edits take a file lock on local disks and replace the file atomically (write to a
temporary name, rename); on object stores run one writer at a time, as for the registry.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facescale.errors import ManifestError, NotFoundError

from . import layout
from .fs import Location, edit_lock
from .identities import MAX_SLUG_LENGTH, SLUG_PATTERN
from .manifest import utcnow
from .records import read_document

log = logging.getLogger(__name__)

#: Where the list lives under the storage root (to move into layout.py).
#: Manual reason that marks an image as reviewed and kept (not excluded).
REVIEWED_KEEP = "reviewed_keep"

Source = Literal["auto", "manual"]


class Exclusion(BaseModel):
    """One excluded (or, with ``reason="reviewed_keep"``, reviewed and kept) source image."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    identity_slug: str = Field(pattern=SLUG_PATTERN.pattern, max_length=MAX_SLUG_LENGTH)
    source_image_id: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=200)
    added_at: datetime = Field(default_factory=utcnow)
    source: Source = "manual"
    added_by: str | None = Field(default=None, max_length=200, description="who decided (manual entries)")
    replaced: Exclusion | None = Field(default=None, description="the entry this one replaced, for undo")

    @field_validator("source_image_id", "reason")
    @classmethod
    def _no_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("added_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("added_at must carry a timezone")
        return value

    def replacing(self, existing: Exclusion | None) -> Exclusion:
        """This entry, remembering ``existing`` (without what that one replaced) for `ExclusionList.undo`."""
        earlier = existing.model_copy(update={"replaced": None}) if existing else None
        return self.model_copy(update={"replaced": earlier})

    @property
    def key(self) -> tuple[str, str]:
        return (self.identity_slug, self.source_image_id)

    @property
    def excludes(self) -> bool:
        """True unless this entry records a reviewed-and-kept image."""
        return self.reason != REVIEWED_KEEP


class ExclusionsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = 1
    entries: list[Exclusion] = Field(default_factory=list)


class ExclusionList:
    """The exclusion list file under a storage root (locked for edits on local disks)."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.path = location.path(layout.EXCLUSIONS_FILE)

    # -- reading ---------------------------------------------------------------------------
    def load(self) -> list[Exclusion]:
        """Every entry, sorted by (identity_slug, source_image_id); empty when there is no file."""
        parsed = read_document(self.location, self.path, ExclusionsFile, "exclusion list")
        where = self.location.display(self.path)
        keys = [e.key for e in parsed.entries]
        if len(keys) != len(set(keys)):
            raise ManifestError(f"malformed exclusion list {where}: duplicate (identity_slug, source_image_id)")
        return sorted(parsed.entries, key=lambda e: e.key)

    def entries(self, identity_slug: str) -> list[Exclusion]:
        """All entries of one identity (exclusions and reviewed-keep marks)."""
        return [e for e in self.load() if e.identity_slug == identity_slug]

    def excluded(self, identity_slug: str) -> set[str]:
        """Source image ids that curation must leave out for this identity."""
        return {e.source_image_id for e in self.entries(identity_slug) if e.excludes}

    def reviewed_keep(self, identity_slug: str) -> set[str]:
        """Source image ids a person reviewed and kept: the cleaner must not remove them."""
        return {e.source_image_id for e in self.entries(identity_slug) if not e.excludes}

    # -- editing ---------------------------------------------------------------------------
    def add(self, entries: Iterable[Exclusion]) -> list[Exclusion]:
        """Add entries; returns those that changed the file (new, or manual replacing auto).

        Adding an entry that exists changes nothing; an automatic entry never replaces a
        manual one (it is ignored and logged at debug level).
        """
        wanted = list(entries)
        for entry in wanted:
            if entry.reason == REVIEWED_KEEP and entry.source != "manual":
                raise ValueError(f"{REVIEWED_KEEP!r} entries are manual only")
        changed: list[Exclusion] = []
        with self._edit() as current:
            for entry in wanted:
                existing = current.get(entry.key)
                if existing is None or (existing.source == "auto" and entry.source == "manual"):
                    current[entry.key] = entry.replacing(existing)
                    changed.append(current[entry.key])
                elif existing.source == "manual" and entry.source == "auto":
                    log.debug("kept manual exclusion entry over automatic one for %s/%s", *entry.key)
        return changed

    def keep(self, identity_slug: str, source_image_ids: Iterable[str], by: str | None = None) -> list[Exclusion]:
        """Record that a person (``by``) reviewed these images and keeps them (replacing any entry)."""
        marks = [
            Exclusion(
                identity_slug=identity_slug, source_image_id=i, reason=REVIEWED_KEEP, source="manual", added_by=by
            )
            for i in source_image_ids
        ]
        changed: list[Exclusion] = []
        with self._edit() as current:
            for mark in marks:
                existing = current.get(mark.key)
                if existing is None or existing.excludes:
                    current[mark.key] = mark.replacing(existing)
                    changed.append(current[mark.key])
        return changed

    def exclude(self, identity_slug: str, source_image_ids: Iterable[str], reason: str = "manual",
                by: str | None = None) -> list[Exclusion]:
        """Record that a person (``by``) excludes these images for ``reason`` (over a keep or an automatic entry)."""
        if reason == REVIEWED_KEEP:
            raise ValueError(f"use keep() to record {REVIEWED_KEEP!r}")
        wanted = [
            Exclusion(identity_slug=identity_slug, source_image_id=i, reason=reason, source="manual", added_by=by)
            for i in source_image_ids
        ]
        changed: list[Exclusion] = []
        with self._edit() as current:
            for entry in wanted:
                existing = current.get(entry.key)
                if existing is None or existing.source == "auto" or not existing.excludes:
                    current[entry.key] = entry.replacing(existing)
                    changed.append(current[entry.key])
        return changed

    def undo(self, identity_slug: str, source_image_id: str) -> Exclusion | None:
        """Take back the manual decision on this image: the entry it replaced comes back, or none is left.

        Returns the entry now in the list (None when none). An automatic entry, or no entry,
        is not a decision to take back: `NotFoundError`.
        """
        key = (identity_slug, source_image_id)
        with self._edit() as current:
            entry = current.get(key)
            if entry is None or entry.source != "manual":
                raise NotFoundError(f"no manual decision on photo {source_image_id} of {identity_slug} to undo")
            if entry.replaced is None:
                del current[key]
            else:
                current[key] = entry.replaced
            return current.get(key)

    def remove(self, identity_slug: str, source_image_ids: Iterable[str]) -> list[Exclusion]:
        """Delete the entries of these images (whatever their source); returns the deleted ones."""
        ids = list(source_image_ids)
        removed: list[Exclusion] = []
        with self._edit() as current:
            for image_id in ids:
                entry = current.pop((identity_slug, image_id), None)
                if entry is not None:
                    removed.append(entry)
        return removed

    def drop(self, source_image_ids: Iterable[str], identity_slug: str | None = None) -> int:
        """Forget every entry of these photos, and of identity ``identity_slug`` (an erasure); returns how many."""
        ids = set(source_image_ids)
        with self._edit() as entries:
            gone = [k for k, e in entries.items() if e.source_image_id in ids or e.identity_slug == identity_slug]
            for key in gone:
                del entries[key]
        return len(gone)

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[tuple[str, str], Exclusion]]:
        """Load under a lock, let the caller edit the entries by key, then save atomically if changed.

        A malformed file is reported before anything (directory, lock file) is created; if
        the caller raises, nothing is written.
        """
        self.load()
        with edit_lock(self.location, self.path, "exclusion list"):
            before = {e.key: e for e in self.load()}
            current = dict(before)
            yield current
            if current != before:
                doc = ExclusionsFile(entries=sorted(current.values(), key=lambda e: e.key))
                text = doc.model_dump_json(indent=2, exclude_none=True)  # no added_by/replaced: as older lists
                self.location.write_bytes_atomic(self.path, text.encode() + b"\n")
