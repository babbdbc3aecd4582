"""The last step of a Ray Data pipeline: workers write their batches as shards, the driver gets receipts.

The crop cache and the CURATED shards are written where the rows are made (any node of the
cluster) through a picklable `facescale.storage.ShardTarget`; what comes back to the driver is
one small receipt row per batch (`RECEIPT_SCHEMA`: the `ShardInfo` list and the row count per
value of a few tally columns), never the rows themselves, so the driver's memory does not grow
with the data. Shard names derive from the keys of the rows they hold (`batch_name`): a task
Ray retries with the same batch rewrites the same file, and anything else a dead task left is
removed by the owner's commit (`ShardTarget.sweep`).

Layout: `data_context` makes Ray Data keep the input order, so the same input is written as
the same shards, byte for byte, whatever the scheduling.

Row order: with ``group_by`` the rows of a batch are written grouped by those columns and in a
random order within each group (`mixed_order`). CURATED shards use it, grouped by split:
rows arrive one identity's copies after another, and a training reader that shuffles whole
row groups would otherwise feed batches of very few identities.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facescale.storage import ShardInfo, ShardTarget, batch_name

RECEIPT_SCHEMA = pa.schema([("shards", pa.string()), ("rows", pa.int64()), ("tally", pa.string())])


def data_context() -> None:
    """Configure this driver's Ray Data for the pipelines that end in `write_shards`.

    Deterministic layout: every operator hands its blocks on in input order
    (``preserve_order``), so which rows share a write batch, and so a shard, is a function
    of the input alone, not of which task finished first. Measured on the demo's 31
    identities (the same crop cache curated again): without it two of four curations wrote
    other shards than the rest, and a model trained on one of those reached test top-1
    0.200 where the others' reached 0.129 (training's input order follows the shards' row
    groups); with it eight of eight wrote the same shards. Progress bars and per-dataset
    log lines are off: the caller's `Progress` reports.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # per-dataset INFO lines, "progress bars disabled"
    # A chunk with fewer shard-sized batches than the write concurrency is not a problem.
    warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks", category=UserWarning)


def mixed_order(batch: pa.Table, keys: Sequence[str], group_by: Sequence[str], seed: str) -> pa.Table:
    """``batch`` grouped by the ``group_by`` columns (ascending), in a random order within each group.

    The order depends on ``seed`` and on the rows alone, not on the order they arrived in
    (rows are first put in the order of their ``keys``), so a retried batch is written
    identically.
    """
    canonical = batch.take(pc.sort_indices(batch, sort_keys=[(k, "ascending") for k in keys]))
    digest = hashlib.blake2b(seed.encode(), digest_size=8).digest()
    shuffled = canonical.take(np.random.default_rng(int.from_bytes(digest, "little")).permutation(batch.num_rows))
    if not group_by:
        return shuffled
    return shuffled.take(pc.sort_indices(shuffled, sort_keys=[(c, "ascending") for c in group_by]))  # stable


def write_shards(
    batch: pa.Table,
    target: ShardTarget,
    keys: Sequence[str],
    tally: Sequence[str],
    group_by: Sequence[str] | None = None,
) -> pa.Table:
    """Ray Data batch function: write ``batch`` as shards of ``target``; return its receipt row.

    Args:
        batch: rows of ``target.schema``.
        target: where the shards go.
        keys: columns that together identify a row (they name the shard).
        tally: columns whose value combinations are counted in the receipt.
        group_by: when given, rows are written grouped by these columns and mixed within a
            group (`mixed_order`); otherwise in the order they came.
    """
    if not batch.num_rows:
        return RECEIPT_SCHEMA.empty_table()
    columns = [batch.column(k).to_pylist() for k in keys]
    name = batch_name("\x1f".join("" if v is None else str(v) for v in row) for row in zip(*columns, strict=True))
    if group_by is not None:
        batch = mixed_order(batch, keys, group_by, name)
    infos = target.write(batch, name)
    counts = Counter(zip(*(batch.column(c).to_pylist() for c in tally), strict=True))
    return pa.table(
        {
            "shards": [json.dumps([info.model_dump() for info in infos])],
            "rows": [batch.num_rows],
            "tally": [json.dumps([[list(k), n] for k, n in counts.items()])],
        },
        schema=RECEIPT_SCHEMA,
    )


@dataclass
class Receipts:
    """What the driver keeps of the receipts: the shards written and the tallies."""

    shards: list[ShardInfo] = field(default_factory=list)
    rows: int = 0
    tally: Counter[tuple[Any, ...]] = field(default_factory=Counter)

    def add(self, receipts: pa.Table | pa.RecordBatch) -> int:
        """Take in a batch of receipt rows; returns the data rows they stand for."""
        rows = 0
        for shards, n, tally in zip(*(receipts.column(c).to_pylist() for c in RECEIPT_SCHEMA.names), strict=True):
            self.shards.extend(ShardInfo.model_validate(s) for s in json.loads(shards))
            for key, count in json.loads(tally):
                self.tally[tuple(key)] += count
            rows += n
        self.rows += rows
        return rows


def sink_options(
    target: ShardTarget,
    keys: Iterable[str],
    tally: Iterable[str],
    shard_rows: int,
    group_by: Iterable[str] | None = None,
) -> dict[str, Any]:
    """``map_batches`` keyword arguments for `write_shards` (one shard-sized batch per task).

    The write is I/O and already-encoded bytes, so it asks for no CPU: the transform before it
    holds every CPU as actors, and a write that waited for one would stall the stream.
    """
    return dict(
        fn_kwargs={
            "target": target,
            "keys": list(keys),
            "tally": list(tally),
            "group_by": None if group_by is None else list(group_by),
        },
        batch_format="pyarrow",
        batch_size=shard_rows,
        num_cpus=0,
        concurrency=2,
    )
