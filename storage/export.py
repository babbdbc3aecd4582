"""Exports of a dataset version to the formats other trainers read: ImageFolder, WebDataset, Parquet.

``export_version`` streams the version one CURATED shard at a time, one record batch at a time,
so memory stays flat whatever the version's size; the destination is any fsspec URI (a local
directory or ``s3://``). What each format writes under ``DEST``:

- ``imagefolder``: ``<split>/<label:05d>-<slug>/<sample_id>.jpg`` (torchvision's ``ImageFolder``
  over ``DEST/train``: the zero-padded label first, so its class index is the label order);
- ``webdataset``: ``<split>/<split>-<shard>.tar`` with ``<key>.jpg``, ``<key>.cls`` (the label)
  and ``<key>.json`` (the other columns) per sample, ``key`` = ``sample_id``;
- ``parquet``: ``data/<train|validation|test>-<shard>.parquet`` (Hugging Face ``datasets``'
  split naming: ``load_dataset("parquet", data_dir=DEST)`` or ``load_dataset(DEST)``).

Each also gets ``labels.json`` (label, name, slug, folder per identity) and ``README.md`` (the
version's dataset card, its ``configs`` pointing at the export's files). Resumable: every part
comes from one source shard and is marked done (``.facescale-export/done/<shard>``) only when
all its files are written; a rerun skips the done shards and rewrites the rest under the same
names, so a killed export finishes without rewriting what was finished or duplicating anything.
``.facescale-export/export.json`` records what the destination holds: a rerun with another
version or other options, or a destination that holds anything else, is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
import tarfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from facescale.errors import ConflictError

from . import layout
from .card import HF_SPLITS, hf_features
from .fs import TMP_PREFIX, Location, os_errors
from .manifest import Manifest, utcnow
from .schemas import CURATED_SCHEMA, SPLITS, Split
from .shards import iter_batches
from .versions import DatasetStore

log = logging.getLogger(__name__)

Format = Literal["imagefolder", "webdataset", "parquet"]
FORMATS: tuple[Format, ...] = ("imagefolder", "webdataset", "parquet")
STATE_DIR = ".facescale-export"
LABELS_FILE = "labels.json"
_JSON_COLUMNS = ("sample_id", "source_image_id", "identity", "identity_slug", "label", "split", "aug_index",
                 "face_box", "width", "height", "sharpness", "brightness", "contrast")


class ExportSpec(BaseModel):
    """What an export destination holds (``.facescale-export/export.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version_id: str
    format: Format
    splits: tuple[Split, ...]
    originals_only: bool


@dataclass
class ExportSummary:
    """What one `export_version` call did."""

    destination: str
    spec: ExportSpec
    shards: int  # source shards in the version
    skipped: int  # of them already done by an earlier (killed) run
    samples: int  # samples written by this call
    files: int  # files written by this call


@dataclass(frozen=True)
class Naming:
    """What an export calls each identity: its ImageFolder folder (by slug) and its ``ClassLabel`` name (by label)."""

    folders: dict[str, str]
    names: list[str]


def folder_name(label: int, slug: str) -> str:
    """An identity's ImageFolder class folder: the zero-padded label, then the slug (sorted = label order)."""
    return f"{label:05d}-{slug}"


def export_version(
    store: DatasetStore,
    version_id: str,
    dest: Location,
    fmt: Format,
    *,
    splits: Iterable[Split] | None = None,
    originals_only: bool = False,
    batch_size: int = 256,
    on_shard: Callable[[str, int], None] | None = None,
) -> ExportSummary:
    """Export version ``version_id`` to ``dest`` in format ``fmt`` (resumes an unfinished export there).

    Args:
        store: the dataset store.
        version_id: a committed version.
        dest: the destination directory (local or remote).
        fmt: ``imagefolder``, ``webdataset`` or ``parquet``.
        splits: the splits to export (default: all three).
        originals_only: only ``aug_index`` 0 (no augmented copies).
        batch_size: rows read at a time (memory is about this many samples).
        on_shard: called with each source shard's name and the samples it gave, done or skipped.

    Raises:
        NotFoundError: no such version.
        ValueError: an unknown format or split, or no split.
        ConflictError: the version is not published, or ``dest`` holds something else (another export,
            other files).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    wanted = set(SPLITS if splits is None else splits)
    if unknown := sorted(wanted - set(SPLITS)):
        raise ValueError(f"unknown split {unknown[0]!r}: use train, val or test")
    if not wanted:
        raise ValueError("no split chosen: use train, val and/or test")
    chosen = tuple(s for s in SPLITS if s in wanted)
    manifest = store.get(version_id)
    if not manifest.published:
        raise ConflictError(f"dataset version {version_id} is not published (its gate failed or never ran): "
                            "only published versions are exported")
    spec = ExportSpec(version_id=version_id, format=fmt, splits=chosen, originals_only=originals_only)
    _claim(dest, spec)
    _record(store, dest, spec)
    naming = Naming({e.slug: folder_name(e.label, e.slug) for e in manifest.identities}, store.label_names(manifest))
    summary = ExportSummary(dest.display(dest.root), spec, len(manifest.shards), 0, 0, 0)
    for shard in manifest.shards:
        stem = posixpath.splitext(posixpath.basename(shard.path))[0]
        marker = dest.path(STATE_DIR, "done", stem)
        if dest.exists(marker):
            summary.skipped += 1
            if on_shard:
                on_shard(stem, 0)
            continue
        batches = _selected(store, manifest, shard.path, spec, batch_size)
        samples, files = _WRITERS[fmt](dest, stem, batches, naming)
        dest.write_bytes_atomic(marker, json.dumps({"samples": samples, "files": files}).encode())
        summary.samples += samples
        summary.files += files
        if on_shard:
            on_shard(stem, samples)
    _finish(store, manifest, dest, spec, naming)
    log.info("exported %s as %s to %s: %d samples written, %d of %d shards already done",
             version_id, fmt, summary.destination, summary.samples, summary.skipped, summary.shards)
    return summary


def _record(store: DatasetStore, dest: Location, spec: ExportSpec) -> None:
    """Note the export in ``<root>/exports/`` before its first file lands: it lives outside the store, so an
    erasure (`storage.erasure`) can only name it to the operator."""
    where = dest.display(dest.root)
    path = store.root.path(layout.EXPORTS_DIR, hashlib.sha256(where.encode()).hexdigest()[:16] + ".json")
    if store.root.exists(path):
        return
    doc = {"destination": where, "version_id": spec.version_id, "format": spec.format,
           "started_at": utcnow().isoformat()}
    store.root.write_bytes_atomic(path, json.dumps(doc, indent=1).encode() + b"\n")


def _claim(dest: Location, spec: ExportSpec) -> None:
    """Record ``spec`` at ``dest``, or check that an unfinished export there is the same one."""
    path = dest.path(STATE_DIR, "export.json")
    if dest.exists(path):
        held = ExportSpec.model_validate_json(dest.read_bytes(path))
        if held != spec:
            raise ConflictError(
                f"{dest.display(dest.root)} holds an export of {held.version_id} ({held.format}, splits "
                f"{'/'.join(held.splits)}, originals only: {held.originals_only}): use another destination"
            )
        with os_errors(dest.root, dest):  # a killed run's half-written parts (atomic writes' temporary names)
            stale = dest.fs.glob(dest.path("**", f"{TMP_PREFIX}*"))
        for path in stale:
            dest.remove_file(path)
        return
    with os_errors(dest.root, dest):
        present = dest.fs.exists(dest.root) and bool(dest.fs.ls(dest.root))
    if present:
        raise ConflictError(f"{dest.display(dest.root)} is not empty: export into a new or empty directory")
    dest.write_bytes_atomic(path, spec.model_dump_json(indent=2).encode())


def _selected(
    store: DatasetStore, manifest: Manifest, shard_path: str, spec: ExportSpec, batch_size: int
) -> Iterator[pa.RecordBatch]:
    path = posixpath.join(store.version_dir(manifest.version_id), shard_path)
    wanted = pa.array(spec.splits, pa.string())
    for batch in iter_batches(store.location, [path], batch_size=batch_size):
        keep = pc.is_in(batch.column("split"), value_set=wanted)
        if spec.originals_only:
            keep = pc.and_(keep, pc.equal(batch.column("aug_index"), 0))
        selected = batch.filter(keep)
        if selected.num_rows:
            yield selected


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in _JSON_COLUMNS}


def _write_imagefolder(
    dest: Location, stem: str, batches: Iterator[pa.RecordBatch], naming: Naming
) -> tuple[int, int]:
    samples = 0
    made: set[str] = set()
    for batch in batches:
        for row in batch.to_pylist():
            directory = dest.path(row["split"], naming.folders[row["identity_slug"]])
            if directory not in made:
                dest.makedirs(directory)
                made.add(directory)
            path = posixpath.join(directory, f"{row['sample_id']}.jpg")
            with os_errors(path, dest, writing=True):
                dest.fs.pipe_file(path, row["image"])  # a half-written file is rewritten: its shard is not done
            samples += 1
    return samples, samples


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _write_webdataset(
    dest: Location, stem: str, batches: Iterator[pa.RecordBatch], naming: Naming
) -> tuple[int, int]:
    samples = 0
    with ExitStack() as stack:
        tars: dict[str, tarfile.TarFile] = {}
        for batch in batches:
            for row in batch.to_pylist():
                split = row["split"]
                if split not in tars:
                    fh: IO[bytes] = stack.enter_context(dest.open_atomic(dest.path(split, f"{split}-{stem}.tar")))
                    tars[split] = stack.enter_context(tarfile.open(fileobj=fh, mode="w|", format=tarfile.PAX_FORMAT))
                key = row["sample_id"]
                _tar_add(tars[split], f"{key}.jpg", row["image"])
                _tar_add(tars[split], f"{key}.cls", str(row["label"]).encode())
                _tar_add(tars[split], f"{key}.json", json.dumps(_metadata(row)).encode())
                samples += 1
        files = len(tars)
    return samples, files


def hf_schema(names: list[str]) -> pa.Schema:
    """The Parquet export's schema: CURATED's columns as Hugging Face ``datasets`` stores its features.

    ``image`` is the ``Image`` feature's struct (``bytes``, ``path``), ``label`` the
    ``ClassLabel``'s int64 with ``names``, and the features ride in the schema metadata under
    ``huggingface`` (where ``datasets`` reads them), so ``load_dataset`` gives PIL images and
    named labels.
    """
    fields = []
    for field in CURATED_SCHEMA:
        if field.name == "image":
            field = field.with_type(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        elif field.name == "label":
            field = field.with_type(pa.int64())
        elif pa.types.is_struct(field.type):
            field = field.with_type(pa.struct([f.with_nullable(True) for f in field.type]))
        # nullable, as `datasets` declares every feature: it keeps a declared feature only when the field matches
        fields.append(field.with_nullable(True))
    info = json.dumps({"info": {"features": hf_features(names)}})
    return pa.schema(fields, metadata={**(CURATED_SCHEMA.metadata or {}), b"huggingface": info.encode()})


def _as_hf(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    columns = {name: batch.column(name) for name in batch.schema.names}
    image = columns["image"]
    columns["image"] = pa.StructArray.from_arrays([image, pa.nulls(len(image), pa.string())], names=["bytes", "path"])
    arrays = [columns[f.name].cast(f.type) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _write_parquet(
    dest: Location, stem: str, batches: Iterator[pa.RecordBatch], naming: Naming
) -> tuple[int, int]:
    schema = hf_schema(naming.names)
    samples = 0
    with ExitStack() as stack:
        writers: dict[str, pq.ParquetWriter] = {}
        for batch in batches:
            for split in SPLITS:
                part = batch.filter(pc.equal(batch.column("split"), split))
                if not part.num_rows:
                    continue
                if split not in writers:
                    path = dest.path("data", f"{HF_SPLITS[split]}-{stem}.parquet")
                    fh: IO[bytes] = stack.enter_context(dest.open_atomic(path))
                    writers[split] = stack.enter_context(pq.ParquetWriter(fh, schema, compression="zstd"))
                writers[split].write_batch(_as_hf(part, schema))
                samples += part.num_rows
        files = len(writers)
    return samples, files


_WRITERS: dict[Format, Callable[[Location, str, Iterator[pa.RecordBatch], Naming], tuple[int, int]]] = {
    "imagefolder": _write_imagefolder,
    "webdataset": _write_webdataset,
    "parquet": _write_parquet,
}


def _finish(store: DatasetStore, manifest: Manifest, dest: Location, spec: ExportSpec, naming: Naming) -> None:
    """The labels file and the card, written after every part (both are rewritten on a rerun)."""
    labels = {
        "version_id": manifest.version_id,
        "format": spec.format,
        "splits": list(spec.splits),
        "originals_only": spec.originals_only,
        "identities": [
            {"label": e.label, "name": e.name, "slug": e.slug, "folder": naming.folders[e.slug],
             "counts": {s: e.counts.get(s, 0) for s in spec.splits}}
            for e in sorted(manifest.identities, key=lambda e: e.label)
        ],
    }
    dest.write_bytes_atomic(dest.path(LABELS_FILE), json.dumps(labels, indent=1).encode() + b"\n")
    what = {
        "imagefolder": "`<split>/<label>-<slug>/<sample_id>.jpg` (torchvision ImageFolder per split)",
        "webdataset": "`<split>/<split>-<shard>.tar` (WebDataset: .jpg, .cls, .json per sample)",
        "parquet": "`data/<split>-<shard>.parquet` (Hugging Face datasets' split naming)",
    }[spec.format]
    note = (f"An export of facescale version `{manifest.version_id}` as {what}: splits {', '.join(spec.splits)}"
            f"{', originals only (aug_index 0)' if spec.originals_only else ''}; labels in `{LABELS_FILE}`.")
    files = {
        "imagefolder": "{split}/**",
        "webdataset": "{split}/*.tar",
        "parquet": "data/{hf}-*.parquet",
    }[spec.format]
    data_files = {HF_SPLITS[s]: files.format(split=s, hf=HF_SPLITS[s]) for s in spec.splits}
    card = store.card_text(manifest, export=note, data_files=data_files, names=naming.names)
    dest.write_bytes_atomic(dest.path("README.md"), card.encode())

