"""The model registry: trained models stored with their record, registered atomically.

    <root>/models/<model_id>/model.json     the record (its presence = registered)
    <root>/models/<model_id>/files/...       the model's files (model.keras, labels.json, ...)

Same commit discipline as a dataset version: files first (each written atomically, its
size and sha256 recorded while writing), ``model.json`` last. A directory without a record
is a register that never finished: readers never list it, and the next register under
that id clears it first. A record is replaced atomically when files are added later
(`ModelRegistry.add_files`, e.g. an evaluation), so readers see the old or the new record.

The registry knows nothing of Keras: what the files are is the training stage's business.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
import posixpath
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from facescale.errors import ConflictError, IntegrityError, ManifestError, NotFoundError, StorageError

from . import layout
from .committed import committed_ids, read_record, uncommitted_ids
from .fs import Location, os_errors
from .manifest import VERSION_ID_PATTERN, check_id, is_valid_id, utcnow
from .records import parse_record

log = logging.getLogger(__name__)

RECORD_FORMAT: Final = 1
_CHUNK = 1 << 20


def new_model_id(now: datetime | None = None) -> str:
    """A sortable, unique model id such as ``m-20261130T091500Z-3fa9c1``."""
    return f"m-{(now or utcnow()).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


class ModelFile(BaseModel):
    """One stored file of a model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str  # relative to the model's files/ directory, forward slashes
    bytes: int = Field(ge=0)
    sha256: str


class ModelRecord(BaseModel):
    """What a registered model is: its data, configuration, metrics and files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = RECORD_FORMAT
    model_id: str = Field(pattern=VERSION_ID_PATTERN)
    created_at: datetime = Field(default_factory=utcnow)
    version_id: str = Field(description="the CURATED dataset version it was trained on")
    num_classes: int = Field(ge=1)
    parent: str | None = Field(None, description="the model it was warm-started from")
    fingerprint: str = Field(description="sha256 of the weights file: one record per trained model")
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    files: list[ModelFile] = Field(default_factory=list)
    notes: dict[str, Any] = Field(default_factory=dict)

    def file(self, path: str) -> ModelFile:
        for f in self.files:
            if f.path == path:
                return f
        raise NotFoundError(f"model {self.model_id} has no file {path!r}")

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> ModelRecord:
        return parse_record(cls, data, "model record", where)


class ModelRegistry:
    """The registered models under ``<root>/models``."""

    def __init__(self, location: Location) -> None:
        self.root = location
        self.location = location.child(layout.MODELS_DIR)

    # -- reading ---------------------------------------------------------------------------
    def model_dir(self, model_id: str) -> str:
        return self.location.path(check_id(model_id, "model"))

    def files_dir(self, model_id: str) -> str:
        return posixpath.join(self.model_dir(model_id), layout.MODEL_FILES_DIR)

    def record_path(self, model_id: str) -> str:
        return posixpath.join(self.model_dir(model_id), layout.MODEL_RECORD_FILE)

    def model_ids(self) -> list[str]:
        """Ids of registered models (those whose record exists), sorted."""
        return committed_ids(self.location, layout.MODEL_RECORD_FILE)

    def list(self) -> list[ModelRecord]:
        """Registered models, oldest first."""
        return sorted((self.get(m) for m in self.model_ids()), key=lambda r: (r.created_at, r.model_id))

    def get(self, model_id: str) -> ModelRecord:
        path = self.record_path(model_id)
        record = read_record(self.location, path, ModelRecord, "model record", f"unknown model {model_id!r}")
        if record.model_id != model_id:
            raise ManifestError(f"malformed model record {self.location.display(path)}: it names {record.model_id!r}")
        return record

    def latest(self) -> ModelRecord | None:
        records = self.list()
        return records[-1] if records else None

    def resolve(self, ref: str) -> ModelRecord:
        """A model by id, or the newest one for ``latest``."""
        if ref == "latest":
            newest = self.latest()
            if newest is None:
                raise NotFoundError("no models registered yet: run `facescale train`")
            return newest
        return self.get(ref)

    def find(self, fingerprint: str) -> ModelRecord | None:
        """The registered model with this fingerprint, if any."""
        return next((r for r in self.list() if r.fingerprint == fingerprint), None)

    def local_dir(self, model_id: str, cache: str | os.PathLike[str]) -> Path:
        """A local directory holding the model's files, checked against the record.

        On a local store that is the model's own ``files/`` directory (nothing is copied);
        otherwise the files are downloaded once into ``<cache>/<model_id>/``.
        """
        record = self.get(model_id)
        if self.location.is_local:
            return Path(self.files_dir(model_id))
        target = Path(cache) / model_id
        for f in record.files:
            dest = target / f.path
            if dest.is_file() and dest.stat().st_size == f.bytes and _sha256_local(dest) == f.sha256:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = posixpath.join(self.files_dir(model_id), f.path)
            digest = hashlib.sha256()
            tmp = dest.with_name(f".{dest.name}.part")
            with os_errors(source, self.location), self.location.fs.open(source, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != f.sha256:
                tmp.unlink(missing_ok=True)
                raise IntegrityError(f"model {model_id}: {f.path} does not match its record")
            os.replace(tmp, dest)
        listed = {target / f.path for f in record.files}
        for stale in [p for p in target.rglob("*") if p.is_file() and p not in listed]:
            stale.unlink()  # a file the record no longer lists (an erasure removed it) leaves the cache too
        return target

    # -- writing ---------------------------------------------------------------------------
    def register(
        self,
        source_dir: str | os.PathLike[str],
        files: Iterable[str],
        *,
        version_id: str,
        num_classes: int,
        fingerprint: str,
        config: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        parent: str | None = None,
        notes: Mapping[str, Any] | None = None,
        model_id: str | None = None,
    ) -> tuple[ModelRecord, bool]:
        """Store local files as a new model: files first, the record last.

        Args:
            source_dir: the local directory the files are in.
            files: their paths relative to ``source_dir`` (kept as the stored layout).
            version_id: the dataset version the model was trained on.
            num_classes: the classifier's size.
            fingerprint: what identifies the trained model (the weights' sha256): a model
                already registered with it is returned instead of stored twice.
            config: the training configuration.
            metrics: what training (and later evaluation) measured.
            parent: the registered model it was warm-started from.
            notes: anything else worth keeping.
            model_id: the id (default: `new_model_id`).

        Returns:
            The record, and whether it was newly registered.
        """
        existing = self.find(fingerprint)
        if existing is not None:
            return existing, False
        if parent is not None:
            self.get(parent)  # must exist
        model_id = check_id(model_id or new_model_id(), "model")
        if self.location.exists(self.record_path(model_id)):
            raise ConflictError(f"model {model_id!r} is already registered")
        directory = self.model_dir(model_id)
        if self.location.exists(directory):
            log.warning("clearing unfinished register of model %s", model_id)
            self.location.remove_tree(directory)
        stored = self._upload(model_id, Path(source_dir), files)
        record = ModelRecord(
            model_id=model_id,
            version_id=version_id,
            num_classes=num_classes,
            parent=parent,
            fingerprint=fingerprint,
            config=dict(config or {}),
            metrics=dict(metrics or {}),
            files=stored,
            notes=dict(notes or {}),
        )
        self.location.write_bytes_atomic(self.record_path(model_id), record.to_json())
        log.info("registered model %s (%d files, dataset %s)", model_id, len(stored), version_id)
        return record, True

    def add_files(
        self,
        model_id: str,
        source_dir: str | os.PathLike[str],
        files: Iterable[str],
        *,
        prefix: str,
        metrics: Mapping[str, Any] | None = None,
    ) -> ModelRecord:
        """Add (or replace) files under ``files/<prefix>/`` and merge ``metrics`` into the record.

        The files are written first, the record is replaced last (atomically); files under
        ``prefix`` that the new set does not name are dropped from the record.
        """
        record = self.get(model_id)
        prefix = prefix.strip("/")
        if not prefix or not is_valid_id(prefix):
            raise StorageError(f"invalid file prefix {prefix!r}")
        stored = self._upload(model_id, Path(source_dir), files, prefix=prefix)
        kept = [f for f in record.files if not f.path.startswith(prefix + "/")]
        updated = record.model_copy(
            update={"files": kept + stored, "metrics": {**record.metrics, **dict(metrics or {})}}
        )
        self.location.write_bytes_atomic(self.record_path(model_id), updated.to_json())
        return updated

    def uncommitted(self) -> builtins.list[str]:
        """Model directories left behind by registers that never finished."""
        return uncommitted_ids(self.location, layout.MODEL_RECORD_FILE)

    def _upload(self, model_id: str, source: Path, files: Iterable[str], prefix: str = "") -> builtins.list[ModelFile]:
        stored = []
        for rel in files:
            parts = Path(rel).parts
            if Path(rel).is_absolute() or ".." in parts or not parts:
                raise StorageError(f"invalid model file path {rel!r}: give a path inside {source}")
            local = source / rel
            name = "/".join((prefix, *parts)) if prefix else "/".join(parts)
            target = posixpath.join(self.files_dir(model_id), name)
            digest = hashlib.sha256()
            size = 0
            try:
                src = open(local, "rb")  # noqa: SIM115 (closed below, after the atomic file)
            except FileNotFoundError:
                raise NotFoundError(f"cannot register {local}: no such file") from None
            with src, self.location.open_atomic(target) as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            stored.append(ModelFile(path=name, bytes=size, sha256=digest.hexdigest()))
        return stored


def _sha256_local(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
