"""The identity registry: display names, safe slugs and labels that never change.

* A name is normalised (Unicode NFC, surrounding and repeated whitespace collapsed) and
  compared case-insensitively, so "Ada  Lovelace" and "ada lovelace" are one identity.
* A slug is a lowercase ASCII ``[a-z0-9-]`` token of at most 64 characters, made with
  python-slugify (transliterating Unicode). Names with nothing to transliterate get a
  hash slug, over-long ones a hashed tail; slugs already taken get ``-2``, ``-3``...
  A slug is safe as a path segment: no dots, slashes or empty strings.
* Labels are assigned once, in order of first registration, and never reused or changed;
  removing an identity only marks it removed, and adding it back restores its label.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from slugify import slugify

from facescale.errors import InvalidIdentityError, ManifestError, NotFoundError

from . import layout
from .fs import Location, edit_lock
from .manifest import utcnow
from .records import read_document

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 200
MAX_SLUG_LENGTH = 64
SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def normalize_name(name: str) -> str:
    """The canonical form of a display name, or InvalidIdentityError explaining why not."""
    if not isinstance(name, str):
        raise InvalidIdentityError(f"identity name must be text, got {type(name).__name__}")
    text = unicodedata.normalize("NFC", name)
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") for ch in text if not ch.isspace()):
        raise InvalidIdentityError(
            f"identity name {name!r} contains control or unassigned characters"
        )
    text = " ".join(text.split())
    if not text:
        raise InvalidIdentityError("identity name is empty")
    if len(text) > MAX_NAME_LENGTH:
        raise InvalidIdentityError(f"identity name is longer than {MAX_NAME_LENGTH} characters")
    return text


def name_key(name: str) -> str:
    """The key two names are compared by (normalised, case-folded)."""
    return normalize_name(name).casefold()


def make_slug(name: str) -> str:
    """The base slug of a (valid) name, before collision handling."""
    # Built from the comparison key, so names that are one identity get one slug
    # (lower() and casefold() disagree: "ᾈ" and "ἀι" are one name, slugify gave "a" and "ai").
    key = name_key(name)
    digest = hashlib.sha256(key.encode()).hexdigest()
    slug = slugify(key, separator="-", lowercase=True)
    slug = re.sub(r"[^a-z0-9-]+", "", slug).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)
    if not slug:
        return f"id-{digest[:12]}"
    if len(slug) > MAX_SLUG_LENGTH:
        slug = f"{slug[: MAX_SLUG_LENGTH - 9].rstrip('-')}-{digest[:8]}"
    return slug


def unique_slug(base: str, taken: set[str]) -> str:
    """``base``, or ``base-N`` with the smallest N >= 2 that is free (length kept <= 64)."""
    if base not in taken:
        return base
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = f"{base[: MAX_SLUG_LENGTH - len(suffix)].rstrip('-')}{suffix}"
        if candidate not in taken:
            return candidate
        n += 1


class Identity(BaseModel):
    """One registered identity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    slug: str = Field(pattern=SLUG_PATTERN.pattern, max_length=MAX_SLUG_LENGTH)
    label: int = Field(ge=0)
    status: Literal["active", "removed", "erased"] = "active"
    added_at: datetime = Field(default_factory=utcnow)
    removed_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"


class RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = 1
    identities: list[Identity] = Field(default_factory=list)


def tombstone_name(label: int) -> str:
    """What the registry calls an erased identity's label (`IdentityRegistry.erase`)."""
    return f"erased {label}"


class IdentityRegistry:
    """The registry file ``<root>/registry/identities.json`` (locked for edits on local disks)."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.path = location.path(layout.REGISTRY_FILE)

    # -- reading ---------------------------------------------------------------------------
    def load(self) -> list[Identity]:
        """Every identity ever registered (removed ones included), in label order."""
        parsed = read_document(self.location, self.path, RegistryFile, "identity registry")
        _check_consistent(parsed.identities, self.location.display(self.path))
        return sorted(parsed.identities, key=lambda i: i.label)

    def list(self, include_removed: bool = False) -> list[Identity]:
        return [i for i in self.load() if include_removed or i.active]

    def get(self, name_or_slug: str) -> Identity:
        found = _find(self.load(), name_or_slug)
        if found is None:
            raise NotFoundError(f"unknown identity {name_or_slug!r}")
        return found

    def labels(self) -> dict[str, int]:
        """slug -> label for active identities."""
        return {i.slug: i.label for i in self.list()}

    # -- editing ---------------------------------------------------------------------------
    def add(self, names: Iterable[str]) -> builtins.list[tuple[Identity, bool]]:
        """Register names; returns (identity, changed) for each, changed=False if already active.

        All names are validated before anything is written.
        """
        wanted = [normalize_name(n) for n in names]
        results: list[tuple[Identity, bool]] = []
        with self._edit() as identities:
            for name in wanted:
                # By name only: a new name that happens to equal another identity's slug
                # (e.g. "jose-marti" next to "José Martí") is a different identity.
                existing = _find(identities, name, by_slug=False)
                if existing is not None and existing.active:
                    results.append((existing, False))
                    continue
                if existing is not None:  # re-activate: same label, same slug
                    revived = existing.model_copy(update={"status": "active", "removed_at": None})
                    identities[identities.index(existing)] = revived
                    results.append((revived, True))
                    continue
                taken = {i.slug for i in identities}
                identity = Identity(
                    name=name,
                    slug=unique_slug(make_slug(name), taken),
                    label=max((i.label for i in identities), default=-1) + 1,
                )
                identities.append(identity)
                results.append((identity, True))
        return results

    def remove(self, names: Iterable[str]) -> builtins.list[Identity]:
        """Mark identities removed (their labels stay reserved). Unknown names are an error."""
        names = list(names)
        current = self.load()
        for name in names:  # fail before touching the disk (no registry directory, no lock file)
            if _find(current, name) is None:
                raise NotFoundError(f"unknown identity {name!r}")
        removed: list[Identity] = []
        with self._edit() as identities:
            for name in names:
                existing = _find(identities, name)
                if existing is None:
                    raise NotFoundError(f"unknown identity {name!r}")
                if existing.active:
                    updated = existing.model_copy(
                        update={"status": "removed", "removed_at": utcnow()}
                    )
                    identities[identities.index(existing)] = updated
                    removed.append(updated)
        return removed

    def erase(self, slug: str) -> Identity | None:
        """Replace the identity ``slug`` by a tombstone: its label stays reserved, its name and slug are gone
        (`storage.erasure`); adding the name again registers a new identity with a new label."""
        with self._edit() as identities:
            existing = next((i for i in identities if i.slug == slug), None)
            if existing is None:
                return None
            tombstone = existing.model_copy(update={
                "name": tombstone_name(existing.label), "slug": f"erased-{existing.label}", "status": "erased",
                "removed_at": existing.removed_at or utcnow(),
            })
            identities[identities.index(existing)] = tombstone
            return tombstone

    @contextlib.contextmanager
    def _edit(self) -> Iterator[builtins.list[Identity]]:
        """Load under a lock, let the caller mutate the list, then save atomically.

        If the caller raises, nothing is written. A malformed registry is reported before
        anything (directory, lock file) is created.
        """
        self.load()
        with edit_lock(self.location, self.path, "identity registry"):
            identities = self.load()
            before = list(identities)
            yield identities
            if identities != before:
                _check_consistent(identities, self.path)
                data = RegistryFile(identities=identities).model_dump_json(indent=2)
                self.location.write_bytes_atomic(self.path, data.encode() + b"\n")


def _find(
    identities: Iterable[Identity], name_or_slug: str, by_slug: bool = True
) -> Identity | None:
    try:
        key = name_key(name_or_slug)
    except InvalidIdentityError:
        return None
    identities = list(identities)
    found = next((i for i in identities if i.name.casefold() == key), None)
    if found is None and by_slug:
        found = next((i for i in identities if i.slug == name_or_slug), None)
    return found


def _check_consistent(identities: list[Identity], where: str) -> None:
    for attr in ("slug", "label"):
        values = [getattr(i, attr) for i in identities]
        if len(values) != len(set(values)):
            raise ManifestError(f"malformed identity registry {where}: duplicate {attr}s")
    keys = [i.name.casefold() for i in identities]
    if len(keys) != len(set(keys)):
        raise ManifestError(f"malformed identity registry {where}: duplicate names")
