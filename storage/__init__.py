"""Dataset storage: layout, RAW/CURATED Parquet shards, versioned manifests, identity registry.

Imports nothing of facescale but `facescale.errors`. Every path is an fsspec URI, so the
same code serves a local directory and an object store.
"""

from .crops import ChunkRecord, ChunkWriter, CropStore, chunk_id, raw_shard_key
from .exclusions import Exclusion, ExclusionList
from .fs import Location
from .identities import Identity, IdentityRegistry, make_slug, normalize_name
from .manifest import CurationNotes, IdentityEntry, KeptNote, Manifest, SelectionNote, ValidationSummary
from .models import ModelFile, ModelRecord, ModelRegistry, new_model_id
from .raw import RawRunWriter, RawStore, RunRecord
from .review import REVIEW_SCHEMA, ReviewInfo, ReviewTable
from .root import StorageRoot
from .schemas import CROP_SCHEMA, CURATED_SCHEMA, RAW_SCHEMA, SPLITS
from .shards import ShardInfo, ShardSizing, ShardTarget, ShardWriter, batch_name, iter_batches, read_table
from .versions import DatasetStore, VersionWriter, new_version_id

__all__ = [
    "CROP_SCHEMA",
    "CURATED_SCHEMA",
    "RAW_SCHEMA",
    "REVIEW_SCHEMA",
    "SPLITS",
    "ChunkRecord",
    "ChunkWriter",
    "CropStore",
    "CurationNotes",
    "DatasetStore",
    "Exclusion",
    "ExclusionList",
    "Identity",
    "IdentityEntry",
    "IdentityRegistry",
    "KeptNote",
    "Location",
    "Manifest",
    "ModelFile",
    "ModelRecord",
    "ModelRegistry",
    "RawRunWriter",
    "RawStore",
    "ReviewInfo",
    "ReviewTable",
    "RunRecord",
    "SelectionNote",
    "ShardInfo",
    "ShardSizing",
    "ShardTarget",
    "ShardWriter",
    "StorageRoot",
    "ValidationSummary",
    "VersionWriter",
    "batch_name",
    "chunk_id",
    "iter_batches",
    "make_slug",
    "new_model_id",
    "new_version_id",
    "normalize_name",
    "raw_shard_key",
    "read_table",
]
