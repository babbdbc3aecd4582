"""Parquet shard writing and reading, sized for streaming image rows.

A `ShardWriter` turns a stream of row batches into numbered Parquet files
(``part-00000.parquet``...). Each shard is written through `Location.open_atomic`, so
a shard file exists only once it is complete; its row count, size and sha256 (computed
while writing, no second read) are returned as `ShardInfo` for the manifest. Row groups
are small (a few hundred images) so readers can stream a shard without loading it; image
columns are stored uncompressed (JPEG does not compress further), the rest with zstd.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from facescale.errors import IntegrityError, StorageError

from .fs import TMP_PREFIX, HashingWriter, Location, os_errors, sha256_file
from .schemas import to_table

UNCOMPRESSED_COLUMNS = ("image", "crop")  # already-compressed JPEG/PNG bytes


class ShardInfo(BaseModel):
    """One committed shard as recorded in a manifest (path relative to the manifest)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ShardSizing:
    """How rows are cut into row groups and shards."""

    rows_per_row_group: int = 256
    max_rows_per_shard: int = 4096
    max_bytes_per_shard: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        if min(self.rows_per_row_group, self.max_rows_per_shard, self.max_bytes_per_shard) < 1:
            raise StorageError("shard sizes must be positive")


class ShardWriter:
    """Write rows of one schema into ``directory/part-NNNNN.parquet`` files.

    Use as a context manager; `close()` returns the `ShardInfo` of every shard written.
    If the block raises, the shard being written is discarded (never half-committed).
    """

    def __init__(
        self,
        location: Location,
        directory: str,
        schema: pa.Schema,
        sizing: ShardSizing | None = None,
        *,
        prefix: str = "part",
        start_index: int = 0,
    ) -> None:
        self.location = location
        self.directory = directory
        self.schema = schema
        self.sizing = sizing or ShardSizing()
        self.prefix = prefix
        self._index = start_index
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._stack: contextlib.ExitStack | None = None
        self._writer: pq.ParquetWriter | None = None
        self._sink: HashingWriter | None = None
        self._path = ""
        self._rows_in_shard = 0
        self.shards: list[ShardInfo] = []

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- public ------------------------------------------------------------------------------
    def write(self, rows: Iterable[Mapping[str, Any]] | pa.Table) -> None:
        """Append rows (dicts or a table); they are validated against the schema first."""
        table = to_table(rows, self.schema)
        if not len(table):
            return
        self._pending.append(table)
        self._pending_rows += len(table)
        while self._pending_rows >= self.sizing.rows_per_row_group:
            self._flush_row_group(self.sizing.rows_per_row_group)

    def close(self) -> list[ShardInfo]:
        """Flush what is buffered, commit the open shard and return all shards written."""
        while self._pending_rows:
            self._flush_row_group(min(self._pending_rows, self.sizing.rows_per_row_group))
        self._finish_shard()
        return list(self.shards)

    def abort(self) -> None:
        """Drop the open shard (its temporary file is removed) and buffered rows."""
        self._pending, self._pending_rows = [], 0
        if self._stack is not None:
            stack, writer, sink = self._stack, self._writer, self._sink
            self._stack = self._writer = self._sink = None
            self._rows_in_shard = 0
            if sink is not None:
                sink.detach()
            if writer is not None:
                # Close it now, into the detached sink: left open, the Parquet writer
                # would write its footer into the discarded file when garbage collected.
                with contextlib.suppress(Exception):
                    writer.close()
            with contextlib.suppress(Exception):
                stack.__exit__(RuntimeError, RuntimeError("aborted"), None)

    # -- internals ---------------------------------------------------------------------------
    def _flush_row_group(self, n: int) -> None:
        # Never overfill a shard: a row group ends where the shard's row budget does.
        n = min(n, self.sizing.max_rows_per_shard - self._rows_in_shard)
        table = pa.concat_tables(self._pending)
        head, rest = table.slice(0, n), table.slice(n)
        self._pending = [rest] if len(rest) else []
        self._pending_rows = len(rest)
        if self._writer is None:
            self._open_shard()
        assert self._writer is not None and self._sink is not None
        self._writer.write_table(head, row_group_size=n)
        self._rows_in_shard += len(head)
        if (
            self._rows_in_shard >= self.sizing.max_rows_per_shard
            or self._sink.bytes_written >= self.sizing.max_bytes_per_shard
        ):
            self._finish_shard()

    def _open_shard(self) -> None:
        name = f"{self.prefix}-{self._index:05d}.parquet"
        self._path = posixpath.join(self.directory, name)
        stack = contextlib.ExitStack()
        raw = stack.enter_context(self.location.open_atomic(self._path))
        self._sink = HashingWriter(raw)
        self._writer = parquet_writer(self._sink, self.schema)
        self._stack = stack
        self._rows_in_shard = 0

    def _finish_shard(self) -> None:
        if self._writer is None or self._stack is None or self._sink is None:
            return
        with os_errors(self._path, self.location):
            self._writer.close()
        self._stack.close()  # commits the file (rename or upload completion)
        self.shards.append(
            ShardInfo(
                path=posixpath.relpath(self._path, self.directory),
                rows=self._rows_in_shard,
                bytes=self._sink.bytes_written,
                sha256=self._sink.hexdigest,
            )
        )
        self._writer = self._stack = self._sink = None
        self._rows_in_shard = 0
        self._index += 1


@dataclass(frozen=True)
class ShardTarget:
    """A directory that parallel writers (Ray tasks on any node) fill with shards of one schema.

    Picklable: it travels to the workers, each of which writes whole shards named after its
    batch (`write`) and returns their `ShardInfo`; the owner adopts them into a manifest or
    record and, before committing, removes what no committed list names (`sweep`), e.g. the
    shard of a task that finished writing but died before reporting and was retried.
    """

    location: Location
    directory: str
    schema: pa.Schema
    sizing: ShardSizing

    def write(self, rows: Iterable[Mapping[str, Any]] | pa.Table, name: str) -> list[ShardInfo]:
        """Write ``rows`` as ``<name>-NNNNN.parquet`` shards (atomically; the same name overwrites)."""
        with ShardWriter(self.location, self.directory, self.schema, self.sizing, prefix=name) as writer:
            writer.write(rows)
        return writer.shards

    def sweep(self, keep: Iterable[ShardInfo]) -> list[str]:
        """Remove Parquet and temporary files not named in ``keep``; returns the names removed."""
        names = {posixpath.basename(info.path) for info in keep}
        removed = [
            name
            for name in self.location.list_files(self.directory)
            if name not in names and (name.endswith(".parquet") or name.startswith(TMP_PREFIX))
        ]
        for name in removed:
            self.location.remove_file(posixpath.join(self.directory, name))
        return removed


def parquet_writer(sink: HashingWriter, schema: pa.Schema) -> pq.ParquetWriter:
    """The Parquet writer every shard is written with (image columns stored, the rest zstd)."""
    return pq.ParquetWriter(
        sink,
        schema,
        compression={f.name: ("NONE" if f.name in UNCOMPRESSED_COLUMNS else "ZSTD") for f in schema},
        use_dictionary=[f.name for f in schema if pa.types.is_string(f.type)],
        write_statistics=[f.name for f in schema if f.name not in UNCOMPRESSED_COLUMNS],
    )


def rewrite_shard(
    location: Location, directory: str, info: ShardInfo, schema: pa.Schema, keep: pa.Array,
    sizing: ShardSizing | None = None,
) -> ShardInfo:
    """Replace shard ``info`` by its rows where ``keep`` is true, under the same name, atomically.

    The rows kept are the same values in the same order (their row groups are re-cut at the
    sizing's row-group size); a reader sees the old file or the new one, never a mix. A shard
    left with no rows stays, empty, so the numbering of the shards after it holds.
    """
    path = posixpath.join(directory, info.path)
    with os_errors(path, location), location.fs.open(path, "rb") as fh:
        table = pq.read_table(fh)
    if len(keep) != len(table):
        raise IntegrityError(f"shard {location.display(path)} has {len(table)} rows, the mask {len(keep)}")
    kept = to_table(table.filter(keep), schema)
    rows_per_group = (sizing or ShardSizing()).rows_per_row_group
    with location.open_atomic(path) as raw:
        sink = HashingWriter(raw)
        writer = parquet_writer(sink, schema)
        with os_errors(path, location):
            if len(kept):
                writer.write_table(kept, row_group_size=rows_per_group)
            writer.close()
    return ShardInfo(path=info.path, rows=len(kept), bytes=sink.bytes_written, sha256=sink.hexdigest)


def batch_name(keys: Iterable[str], prefix: str = "part") -> str:
    """A shard name prefix derived from the keys of the rows it holds (a retried batch gets the same)."""
    digest = hashlib.blake2b(digest_size=8)
    for key in sorted(keys):
        digest.update(key.encode())
        digest.update(b"\0")
    return f"{prefix}-{digest.hexdigest()}"


def read_table(
    location: Location,
    paths: Sequence[str],
    columns: Sequence[str] | None = None,
    schema: pa.Schema | None = None,
) -> pa.Table:
    """Read whole shards into one table (small data: tests, manifests' companions).

    ``schema`` gives the result its columns when there are no shards to read (an empty
    version); without it, reading no shards at all is an error.
    """
    batches = list(iter_batches(location, paths, columns=columns))
    if batches:
        return pa.Table.from_batches(batches)
    if schema is None:
        raise StorageError("no shards to read and no schema given for an empty table")
    empty = schema.empty_table()
    return empty.select(list(columns)) if columns is not None else empty


def iter_batches(
    location: Location,
    paths: Sequence[str],
    columns: Sequence[str] | None = None,
    batch_size: int = 256,
) -> Iterator[pa.RecordBatch]:
    """Stream record batches from shards, one row group at a time."""
    for path in paths:
        try:
            with os_errors(path, location), location.fs.open(path, "rb") as fh:
                try:
                    parquet = pq.ParquetFile(fh)
                except pa.ArrowInvalid as exc:  # no Parquet footer: truncated or not a shard
                    raise IntegrityError(f"shard {location.display(path)} is unreadable: {exc}") from exc
                yield from parquet.iter_batches(batch_size=batch_size, columns=columns)
        except FileNotFoundError as exc:
            raise IntegrityError(f"shard missing: {location.display(path)}") from exc


def verify_shard(location: Location, directory: str, info: ShardInfo) -> None:
    """Raise IntegrityError unless the shard's size, sha256 and row count match ``info``."""
    path = posixpath.join(directory, info.path)
    shown = location.display(path)
    if not location.exists(path):
        raise IntegrityError(f"shard missing: {shown}")
    digest = sha256_file(location, path)
    if digest != info.sha256:
        raise IntegrityError(f"shard checksum mismatch: {shown}")
    with os_errors(path, location), location.fs.open(path, "rb") as fh:
        rows = pq.ParquetFile(fh).metadata.num_rows
    if rows != info.rows:
        raise IntegrityError(f"shard {shown} has {rows} rows, manifest says {info.rows}")
