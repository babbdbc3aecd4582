"""The nightly plans: one JSON document per planned night, written once, and which identities each searched.

``<root>/orchestration/plans/<prefix>-<key>.json``: the keywords and batches of one nightly
run (the orchestration's ``Plan``), stored before its first scrape so a rerun of the night
scrapes the same batches. A plan never changes once written (an atomic write of the whole
document); its ``waiting`` list (the identities searched deeper because they were short of
clean photos) is kept in the directory's listing index (`listing.ListingIndex`), so counting
the nights that searched an identity reads one file plus the plans the index lacks.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from .fs import Location
from .identities import name_key
from .listing import ListingIndex

PLANS_DIR = "orchestration/plans"


class _PlanWaiting(BaseModel):
    """What the waiting count needs of a stored plan (the listing index keeps this per plan)."""

    waiting: list[str] = Field(default_factory=list)


class PlanStore:
    """The stored plans of a storage root (documents by name; their meaning is the orchestration's)."""

    def __init__(self, location: Location) -> None:
        self.location = location.child(PLANS_DIR)

    def read(self, name: str) -> bytes | None:
        """The plan stored as ``name`` (e.g. ``nightly-20261206``), None when there is none."""
        path = self.location.path(f"{name}.json")
        return self.location.read_bytes(path) if self.location.exists(path) else None

    def write(self, name: str, document: bytes) -> None:
        """Store the plan ``name`` (whole, atomically)."""
        self.location.makedirs(self.location.root)
        self.location.write_bytes_atomic(self.location.path(f"{name}.json"), document)

    def waiting_nights(self, prefix: str, *, besides: str) -> dict[str, int]:
        """How many stored ``prefix`` plans other than ``besides`` searched each identity as waiting (by
        `identities.name_key`)."""
        plans = self.location

        def read(file: str) -> _PlanWaiting:
            return _PlanWaiting.model_validate_json(plans.read_bytes(plans.path(file)))

        def files() -> list[str]:  # list_files: empty while no plan was written
            return [f for f in plans.list_files(plans.root) if f.endswith(".json") and not f.startswith("_")]

        counts: dict[str, int] = {}
        for file, plan in ListingIndex(plans, _PlanWaiting, read, entries=files).records().items():
            if file.startswith(f"{prefix}-") and file != f"{besides}.json":
                for name in plan.waiting:
                    counts[name_key(name)] = counts.get(name_key(name), 0) + 1
        return counts
