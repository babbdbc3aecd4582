"""A storage root and every store in it, built once: what a stage is given instead of a `Location`.

`Services` (the composition root) makes one ``StorageRoot`` from the settings; a stage reads
and writes through the stores it is handed and never builds a store itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .crops import CropStore
from .erasures import ErasureStore
from .exclusions import ExclusionList
from .fs import Location
from .identities import IdentityRegistry
from .models import ModelRegistry
from .plans import PlanStore
from .raw import RawStore
from .review import ReviewTable
from .shards import ShardSizing
from .versions import DatasetStore


@dataclass(frozen=True)
class StorageRoot:
    """The stores of one root (``sizing``: shard sizes of the stores that write shards)."""

    location: Location
    sizing: ShardSizing | None = None

    @classmethod
    def from_uri(cls, uri: str, sizing: ShardSizing | None = None) -> StorageRoot:
        """The root at a local path or fsspec URI."""
        return cls(Location.from_uri(uri), sizing)

    @cached_property
    def raw(self) -> RawStore:
        return RawStore(self.location, self.sizing)

    @cached_property
    def crops(self) -> CropStore:
        return CropStore(self.location, self.sizing)

    @cached_property
    def datasets(self) -> DatasetStore:
        return DatasetStore(self.location, self.sizing, raw=self.raw, crops=self.crops)

    @cached_property
    def registry(self) -> IdentityRegistry:
        return IdentityRegistry(self.location)

    @cached_property
    def exclusions(self) -> ExclusionList:
        return ExclusionList(self.location)

    @cached_property
    def models(self) -> ModelRegistry:
        return ModelRegistry(self.location)

    @cached_property
    def plans(self) -> PlanStore:
        return PlanStore(self.location)

    @cached_property
    def review(self) -> ReviewTable:
        return ReviewTable(self.location)

    @cached_property
    def erasures(self) -> ErasureStore:
        return ErasureStore(self.location)
