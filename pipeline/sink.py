"""The last step of a Ray Data pipeline: workers write their batches as shards, the driver gets receipts.

The crop cache and the CURATED shards are written where the rows are made (any node of the
cluster) through a picklable `facescale.storage.ShardTarget`; what comes back to the driver is
one small receipt row per batch (`RECEIPT_SCHEMA`: the `ShardInfo` list and the row count per
value of a few tally columns), never the rows themselves, so the driver's memory does not grow
with the data. Shard names derive from the keys of the rows they hold (`batch_name`): a task
Ray retries with the same batch rewrites the same file, and anything else a dead task left is
removed by the owner's commit (`ShardTarget.sweep`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from facescale.storage import ShardInfo, ShardTarget, batch_name

RECEIPT_SCHEMA = pa.schema([("shards", pa.string()), ("rows", pa.int64()), ("tally", pa.string())])


def write_shards(batch: pa.Table, target: ShardTarget, keys: Sequence[str], tally: Sequence[str]) -> pa.Table:
    """Ray Data batch function: write ``batch`` as shards of ``target``; return its receipt row.

    Args:
        batch: rows of ``target.schema``.
        target: where the shards go.
        keys: columns that together identify a row (they name the shard).
        tally: columns whose value combinations are counted in the receipt.
    """
    if not batch.num_rows:
        return RECEIPT_SCHEMA.empty_table()
    columns = [batch.column(k).to_pylist() for k in keys]
    name = batch_name("\x1f".join("" if v is None else str(v) for v in row) for row in zip(*columns, strict=True))
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


def sink_options(target: ShardTarget, keys: Iterable[str], tally: Iterable[str], shard_rows: int) -> dict[str, Any]:
    """``map_batches`` keyword arguments for `write_shards` (one shard-sized batch per task).

    The write is I/O and already-encoded bytes, so it asks for no CPU: the transform before it
    holds every CPU as actors, and a write that waited for one would stall the stream.
    """
    return dict(
        fn_kwargs={"target": target, "keys": list(keys), "tally": list(tally)},
        batch_format="pyarrow",
        batch_size=shard_rows,
        num_cpus=0,
        concurrency=2,
    )
