"""RAW runs: append-only shards of scraped (or ingested) images with provenance.

A run is a directory ``raw/<run_id>/`` with numbered shards and ``run.json``, the record
of what is committed. `RawRunWriter.commit` makes buffered rows durable *together with*
the units of work they complete (for example the keywords a scraper finished), in one
atomic replace of ``run.json``. A writer that dies loses only uncommitted rows, and its
unfinished units are redone on restart: shard files not named in ``run.json`` are
overwritten, never read. So a rerun neither loses nor duplicates rows.
"""

from __future__ import annotations

import builtins
import logging
import posixpath
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from facescale.errors import ConflictError, NotFoundError

from . import layout
from .committed import committed_ids, read_record
from .fs import Location
from .listing import ListingIndex
from .manifest import VERSION_ID_PATTERN, check_id, utcnow
from .schemas import RAW_SCHEMA
from .shards import ShardInfo, ShardSizing, ShardWriter, iter_batches, verify_shard

log = logging.getLogger(__name__)


#: Run-record ``meta`` key of a scrape run: slugs whose search ended (the engine listed nothing
#: more) before the depth asked, without a note; a deeper search of them would find nothing more.
EXHAUSTED = "exhausted"


class RunRecord(BaseModel):
    """The committed state of one RAW run."""

    model_config = ConfigDict(extra="forbid")

    format: int = 1
    run_id: str = Field(pattern=VERSION_ID_PATTERN)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished: bool = False
    shards: list[ShardInfo] = Field(default_factory=list)
    completed: list[str] = Field(default_factory=list, description="units of work done, e.g. keywords")
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)


class RunVerdicts(BaseModel):
    """What one RAW run stored: images accepted, results rejected by reason (the verdicts index's entry)."""

    run_id: str
    finished: bool
    accepted: int
    rejected: dict[str, int]


#: The listing index of `RunVerdicts` in ``raw/``: a finished run's verdicts never change.
VERDICTS_INDEX = "_verdicts.json"


class RawStore:
    """All RAW runs under ``<root>/raw``."""

    def __init__(self, location: Location, sizing: ShardSizing | None = None) -> None:
        self.location = location.child(layout.RAW_DIR)
        self.sizing = sizing or ShardSizing()

    def run_dir(self, run_id: str) -> str:
        return self.location.path(check_id(run_id, "raw run"))

    def run_ids(self) -> list[str]:
        return committed_ids(self.location, layout.RUN_FILE)

    def exists(self, run_id: str) -> bool:
        """Whether run ``run_id`` is committed (one request, whatever the store's history)."""
        return self.location.exists(posixpath.join(self.run_dir(run_id), layout.RUN_FILE))

    def get(self, run_id: str) -> RunRecord:
        path = posixpath.join(self.run_dir(run_id), layout.RUN_FILE)
        return read_record(self.location, path, RunRecord, "run record", f"unknown raw run {run_id!r}")

    def list(self) -> list[RunRecord]:
        """Committed runs, oldest first; finished ones come from the listing index (`storage.listing`)."""
        records = ListingIndex(self.location, RunRecord, self.get, final=lambda r: r.finished).records().values()
        return sorted(records, key=lambda r: (r.created_at, r.run_id))

    def shard_paths(self, run_ids: Iterable[str] | None = None) -> builtins.list[str]:
        """The committed shards of ``run_ids`` (default: of every run, oldest first, through the listing index)."""
        records = self.list() if run_ids is None else [self.get(r) for r in run_ids]
        return [posixpath.join(self.run_dir(r.run_id), s.path) for r in records for s in r.shards]

    def iter_batches(
        self, run_ids: Iterable[str] | None = None, columns: Sequence[str] | None = None, batch_size: int = 256
    ) -> Iterator[pa.RecordBatch]:
        yield from iter_batches(self.location, self.shard_paths(run_ids), columns, batch_size)

    def verdicts(self, run_ids: Iterable[str] | None = None) -> tuple[int, Counter[str]]:
        """Committed rows accepted, and rejected by reason (``error``), read from that one column."""
        counts: Counter[str | None] = Counter()
        for batch in self.iter_batches(run_ids, columns=["error"], batch_size=8192):
            counts.update(batch.column("error").to_pylist())
        accepted = counts.pop(None, 0)
        return accepted, Counter({reason: n for reason, n in counts.items() if reason is not None})

    def run_verdicts(self) -> dict[str, RunVerdicts]:
        """Every committed run's verdicts, by run id: finished runs' from their listing index (``_verdicts.json``).

        So what a dataset card reads about the downloads behind a version is one file plus the
        runs finished since, not every RAW shard the store has ever written.
        """

        def read(run_id: str) -> RunVerdicts:
            record = self.get(run_id)
            accepted, rejected = self.verdicts([run_id])
            return RunVerdicts(run_id=run_id, finished=record.finished, accepted=accepted, rejected=dict(rejected))

        return ListingIndex(self.location, RunVerdicts, read, final=lambda v: v.finished, name=VERDICTS_INDEX).records()

    def verify(self, run_id: str) -> RunRecord:
        record = self.get(run_id)
        for shard in record.shards:
            verify_shard(self.location, self.run_dir(run_id), shard)
        return record

    def open(self, run_id: str, meta: Mapping[str, Any] | None = None) -> RawRunWriter:
        """Open a run for appending: a new one, or an unfinished one to resume."""
        check_id(run_id, "raw run")
        try:
            record = self.get(run_id)
        except NotFoundError:
            record = RunRecord(run_id=run_id, meta=dict(meta or {}))
        if record.finished:
            raise ConflictError(f"raw run {run_id!r} is finished; start a new run id")
        return RawRunWriter(self, record)


class RawRunWriter:
    """Appends rows to one run; `commit` makes rows and completed units durable together."""

    def __init__(self, store: RawStore, record: RunRecord) -> None:
        self.store = store
        self.record = record
        self.directory = store.run_dir(record.run_id)
        self._writer: ShardWriter | None = None
        self._completed = set(record.completed)

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def is_completed(self, unit: str) -> bool:
        return unit in self._completed

    def write(self, rows: Iterable[Mapping[str, Any]] | pa.Table) -> None:
        if self._writer is None:
            self._writer = ShardWriter(
                self.store.location, self.directory, RAW_SCHEMA, self.store.sizing, start_index=len(self.record.shards)
            )
        self._writer.write(rows)

    def commit(
        self, completed: Iterable[str] = (), *, finished: bool = False, meta: Mapping[str, Any] | None = None
    ) -> RunRecord:
        """Close the open shard(s) and record them, plus ``completed`` units, atomically."""
        shards = list(self.record.shards)
        if self._writer is not None:
            shards += self._writer.close()
            self._writer = None
        new_units = [u for u in dict.fromkeys(completed) if u not in self._completed]
        record = self.record.model_copy(
            update={
                "shards": shards,
                "completed": [*self.record.completed, *new_units],
                "finished": finished or self.record.finished,
                "updated_at": utcnow(),
                "meta": {**self.record.meta, **(meta or {})},
            }
        )
        path = posixpath.join(self.directory, layout.RUN_FILE)
        self.store.location.write_bytes_atomic(path, record.model_dump_json(indent=2).encode())
        self.record = record
        self._completed.update(new_units)
        return record

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def __enter__(self) -> RawRunWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.abort()  # rows not committed explicitly are dropped
