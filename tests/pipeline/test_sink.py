"""The Ray sink: CURATED rows grouped by split, identities mixed within a split; shards follow the input order."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facescale.pipeline.sink import Receipts, data_context, mixed_order, sink_options, write_shards
from facescale.storage import Location, ShardSizing, ShardTarget


def _rows(identities: int = 6, per: int = 40) -> pa.Table:
    """Rows as curation makes them: one identity's copies after another, splits interleaved."""
    ids, people, splits = [], [], []
    for person in range(identities):
        for copy in range(per):
            ids.append(f"p{person}-{copy:03d}")
            people.append(f"person-{person}")
            splits.append("train" if copy % 10 < 8 else ("val" if copy % 10 == 8 else "test"))
    return pa.table({"sample_id": ids, "identity_slug": people, "split": splits})


def _runs(values: list[str]) -> int:
    """How many runs of equal consecutive values."""
    return 1 + sum(1 for a, b in itertools.pairwise(values) if a != b)


def test_rows_are_grouped_by_split_and_mixed_within() -> None:
    batch = _rows()
    out = mixed_order(batch, ["sample_id"], ["split"], "part-1")
    assert sorted(out.column("sample_id").to_pylist()) == sorted(batch.column("sample_id").to_pylist())
    splits = out.column("split").to_pylist()
    assert splits == sorted(splits)  # test, then train, then val: each split one run
    train = [p for p, s in zip(out.column("identity_slug").to_pylist(), splits, strict=True) if s == "train"]
    assert len(set(train[:24])) == 6  # the first rows of the split already hold every identity
    assert _runs(train) > len(train) // 2  # far from one run per identity (6)


def test_order_depends_on_the_rows_and_seed_not_on_arrival() -> None:
    batch = _rows()
    reversed_batch = batch.take(list(range(batch.num_rows - 1, -1, -1)))
    one = mixed_order(batch, ["sample_id"], ["split"], "part-1").column("sample_id").to_pylist()
    assert mixed_order(reversed_batch, ["sample_id"], ["split"], "part-1").column("sample_id").to_pylist() == one
    assert mixed_order(batch, ["sample_id"], ["split"], "part-2").column("sample_id").to_pylist() != one


def test_write_shards_writes_the_mixed_order(tmp_path: Path) -> None:
    schema = _rows().schema
    location = Location.from_uri(str(tmp_path))
    target = ShardTarget(location, str(tmp_path / "shards"), schema, ShardSizing(rows_per_row_group=32))
    receipt = write_shards(_rows(), target, ["sample_id"], ["split"], group_by=["split"])
    assert receipt.column("rows").to_pylist() == [240]
    (path,) = sorted((tmp_path / "shards").glob("*.parquet"))
    parquet = pq.ParquetFile(path)
    for index in range(parquet.metadata.num_row_groups):
        group = parquet.read_row_group(index)
        if set(group.column("split").to_pylist()) == {"train"}:
            assert len(set(group.column("identity_slug").to_pylist())) >= 5  # a row group mixes people
    plain = ShardTarget(location, str(tmp_path / "plain"), schema, ShardSizing(rows_per_row_group=32))
    write_shards(_rows(), plain, ["sample_id"], ["split"])
    (path,) = sorted((tmp_path / "plain").glob("*.parquet"))
    first = pq.ParquetFile(path).read_row_group(0)
    assert set(first.column("identity_slug").to_pylist()) == {"person-0"}  # without: the order they came in


class _SlowFirst:
    """An actor transform under which the batch holding row 0 finishes last."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        if 0 in batch.column("n").to_pylist():
            time.sleep(3)
        return batch


@pytest.mark.ray
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
def test_shards_follow_the_input_order_whatever_finishes_first(tmp_path: Path) -> None:
    """With `data_context`, a late first batch does not reshuffle which rows share a shard."""
    ray = pytest.importorskip("ray")
    rows = pa.table({"n": list(range(96)), "sample_id": [f"s{i:03d}" for i in range(96)], "split": ["train"] * 96})
    target = ShardTarget(Location.from_uri(str(tmp_path)), str(tmp_path / "shards"), rows.schema, ShardSizing())
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        data_context()
        # 12 blocks of 8 rows (no task makes them), two actors: the first block finishes last
        ds = ray.data.from_arrow([rows.slice(i, 8) for i in range(0, rows.num_rows, 8)])
        pool = ray.data.ActorPoolStrategy(size=2)
        ds = ds.map_batches(_SlowFirst, batch_format="pyarrow", batch_size=8, compute=pool, num_cpus=1)
        ds = ds.map_batches(write_shards, **sink_options(target, ["sample_id"], ["split"], 24))
        receipts = Receipts()
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            receipts.add(batch)
    finally:
        ray.shutdown()
    shards = sorted(pq.read_table(tmp_path / "shards" / s.path).column("n").to_pylist() for s in receipts.shards)
    assert shards == [list(range(i, i + 24)) for i in range(0, 96, 24)]  # consecutive input rows, in order
