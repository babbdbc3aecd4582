"""ShardWriter / readers: round trips, rotation, checksums, schema checks, aborted writes."""

from __future__ import annotations

import hashlib
import io
import posixpath
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from facescale.errors import IntegrityError, StorageError
from facescale.storage import (
    CURATED_SCHEMA,
    RAW_SCHEMA,
    Location,
    ShardSizing,
    ShardWriter,
    iter_batches,
    read_table,
)
from facescale.storage.shards import verify_shard


def _paths(directory: str, writer_infos: list) -> list[str]:
    return [posixpath.join(directory, s.path) for s in writer_infos]


def _write(location: Location, rows, schema=RAW_SCHEMA, **sizing) -> tuple[str, list]:
    directory = location.path("shards")
    with ShardWriter(location, directory, schema, ShardSizing(**sizing)) as writer:
        writer.write(rows)
    return directory, writer.shards


# -- round trips ---------------------------------------------------------------------------


def test_raw_rows_round_trip(location, make_raw_row, jpegs):
    rows = [make_raw_row(i, rejected=(i % 3 == 2)) for i in range(7)]
    directory, shards = _write(location, rows, rows_per_row_group=2, max_rows_per_shard=3)

    table = read_table(location, _paths(directory, shards))

    assert table.schema.equals(RAW_SCHEMA, check_metadata=False)
    assert table.schema.field("fetched_at").type == pa.timestamp("us", tz="UTC")
    assert not table.schema.field("run_id").nullable
    assert table.to_pylist() == rows
    assert [r["image"] for r in table.to_pylist()] == [r["image"] for r in rows]
    assert table.column("image").null_count == 2  # rejections are rows too
    stored = [image for image in table.column("image").to_pylist() if image is not None]
    assert set(stored) == set(jpegs)
    assert Image.open(io.BytesIO(stored[0])).size == (32, 32)  # still a decodable JPEG


def test_curated_rows_round_trip(location, make_curated_row):
    rows = [make_curated_row(i) for i in range(5)]
    directory, shards = _write(location, rows, CURATED_SCHEMA, rows_per_row_group=2)

    table = read_table(location, _paths(directory, shards))

    assert table.schema.equals(CURATED_SCHEMA, check_metadata=False)
    for name in ("label", "aug_index", "face_box", "image", "sharpness"):
        assert table.schema.field(name).type == CURATED_SCHEMA.field(name).type
    assert table.to_pylist() == rows


def test_table_input_is_cast_to_the_schema(location, make_raw_row):
    rows = [make_raw_row(i) for i in range(4)]
    # A table with inferred types (int64, ...) and without the nullable columns it lacks.
    loose = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "page_url"} for r in rows])
    assert loose.schema.field("rank").type == pa.int64()
    directory, shards = _write(location, loose)

    table = read_table(location, _paths(directory, shards))

    assert table.schema.field("rank").type == pa.int32()
    assert table.schema.field("http_status").type == pa.int16()
    assert table.column("page_url").to_pylist() == [None] * 4
    assert table.column("image").to_pylist() == [r["image"] for r in rows]


def test_iter_batches_streams_selected_columns(location, make_raw_row):
    rows = [make_raw_row(i) for i in range(9)]
    directory, shards = _write(location, rows, rows_per_row_group=4, max_rows_per_shard=5)

    batches = list(iter_batches(location, _paths(directory, shards), ["source_url", "image"], 3))

    assert all(b.num_rows <= 3 for b in batches)
    assert all(b.schema.names == ["source_url", "image"] for b in batches)
    got = pa.Table.from_batches(batches).to_pylist()
    assert got == [{"source_url": r["source_url"], "image": r["image"]} for r in rows]


def test_reading_no_shards_needs_a_schema(location):
    empty = read_table(location, [], columns=["image_id", "image"], schema=RAW_SCHEMA)
    assert empty.num_rows == 0
    assert empty.schema.names == ["image_id", "image"]
    with pytest.raises(StorageError):
        read_table(location, [])


def test_reading_a_missing_shard_is_an_integrity_error(location, make_raw_row):
    directory, shards = _write(location, [make_raw_row(0)])
    location.fs.rm_file(posixpath.join(directory, shards[0].path))
    with pytest.raises(IntegrityError, match="missing"):
        read_table(location, _paths(directory, shards))


def test_reading_a_truncated_shard_is_an_integrity_error(location, make_raw_row):
    directory, shards = _write(location, [make_raw_row(i) for i in range(3)])
    path = posixpath.join(directory, shards[0].path)
    location.fs.pipe_file(path, location.fs.cat_file(path)[:-100])
    with pytest.raises(IntegrityError, match="unreadable"):
        read_table(location, [path])


# -- sizing ------------------------------------------------------------------------------


def test_rotation_by_rows_never_overfills_a_shard(location, make_raw_row, row_groups_of):
    rows = [make_raw_row(i) for i in range(10)]
    directory, shards = _write(location, rows, rows_per_row_group=2, max_rows_per_shard=3)

    assert [s.path for s in shards] == [f"part-{i:05d}.parquet" for i in range(4)]
    assert [s.rows for s in shards] == [3, 3, 3, 1]
    for shard in shards:
        groups = row_groups_of(location, posixpath.join(directory, shard.path))
        assert sum(groups) == shard.rows
        assert max(groups) <= 2


def test_row_groups_have_rows_per_row_group(location, make_raw_row, row_groups_of):
    writer = ShardWriter(location, location.path("d"), RAW_SCHEMA, ShardSizing(rows_per_row_group=4))
    for i in range(10):  # row by row: buffered until a row group is full
        writer.write([make_raw_row(i)])
    shards = writer.close()

    assert [s.rows for s in shards] == [10]
    assert row_groups_of(location, location.path("d", shards[0].path)) == [4, 4, 2]


def test_rotation_by_bytes(location, make_raw_row):
    rng = random.Random(7)
    rows = []
    for i in range(24):
        row = make_raw_row(i)
        row["image"] = rng.randbytes(1000)  # incompressible, about 2 kB per row group
        rows.append(row)
    limit = 5000
    directory, shards = _write(
        location, rows, rows_per_row_group=2, max_rows_per_shard=1000, max_bytes_per_shard=limit
    )

    assert len(shards) > 1
    assert sum(s.rows for s in shards) == len(rows)
    for shard in shards[:-1]:
        assert shard.bytes >= limit  # rotated only once the limit was reached ...
        with location.fs.open(posixpath.join(directory, shard.path), "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
        before_last = sum(
            meta.row_group(g).column(c).total_compressed_size
            for g in range(meta.num_row_groups - 1)
            for c in range(meta.num_columns)
        )
        assert before_last < limit  # ... and not a row group later than needed
    rows_back = read_table(location, _paths(directory, shards)).column("image").to_pylist()
    assert rows_back == [r["image"] for r in rows]


def test_sizes_must_be_positive():
    with pytest.raises(StorageError):
        ShardSizing(max_rows_per_shard=0)


# -- checksums -----------------------------------------------------------------------------


def test_shard_info_matches_the_stored_file(location, make_raw_row):
    rows = [make_raw_row(i) for i in range(7)]
    directory, shards = _write(location, rows, rows_per_row_group=2, max_rows_per_shard=4)

    assert len(shards) == 2
    for shard in shards:
        path = posixpath.join(directory, shard.path)
        data = location.fs.cat_file(path)
        assert shard.bytes == len(data) == location.fs.size(path)
        assert shard.sha256 == hashlib.sha256(data).hexdigest()
        verify_shard(location, directory, shard)


def test_verify_shard_detects_a_flipped_byte(location, make_raw_row):
    directory, shards = _write(location, [make_raw_row(i) for i in range(3)])
    path = posixpath.join(directory, shards[0].path)
    data = bytearray(location.fs.cat_file(path))
    data[len(data) // 2] ^= 0x01
    location.fs.pipe_file(path, bytes(data))

    with pytest.raises(IntegrityError, match="checksum"):
        verify_shard(location, directory, shards[0])


def test_verify_shard_detects_a_missing_file(location, make_raw_row):
    directory, shards = _write(location, [make_raw_row(0)])
    location.fs.rm_file(posixpath.join(directory, shards[0].path))

    with pytest.raises(IntegrityError, match="missing"):
        verify_shard(location, directory, shards[0])


def test_verify_shard_detects_a_wrong_row_count(location, make_raw_row):
    directory, shards = _write(location, [make_raw_row(i) for i in range(3)])
    with pytest.raises(IntegrityError, match="rows"):
        verify_shard(location, directory, shards[0].model_copy(update={"rows": 4}))


# -- schema violations ---------------------------------------------------------------------


def _bad_raw_rows(make_raw_row):
    unknown = {**make_raw_row(1), "identiy": "typo"}
    null_required = {**make_raw_row(1), "identity": None}
    missing_required = {k: v for k, v in make_raw_row(1).items() if k != "source_url"}
    wrong_type = {**make_raw_row(1), "rank": "first"}
    overflow = {**make_raw_row(1), "http_status": 70000}
    return {
        "unknown column": unknown,
        "null in required field": null_required,
        "missing required field": missing_required,
        "wrong type": wrong_type,
        "int16 overflow": overflow,
    }


@pytest.mark.parametrize(
    "case",
    ["unknown column", "null in required field", "missing required field", "wrong type", "int16 overflow"],
)
def test_schema_violations_raise_and_write_nothing(location, make_raw_row, files_under, case):
    bad = _bad_raw_rows(make_raw_row)[case]
    writer = ShardWriter(location, location.path("d"), RAW_SCHEMA, ShardSizing(rows_per_row_group=1))
    with pytest.raises(StorageError):
        writer.write([make_raw_row(0), bad])  # the good row of the batch is refused too
    assert writer.close() == []
    assert files_under(location) == []


def test_table_with_an_unknown_column_is_refused(location, make_raw_row, files_under):
    table = pa.Table.from_pylist([make_raw_row(0)]).append_column("extra", pa.array([1]))
    writer = ShardWriter(location, location.path("d"), RAW_SCHEMA)
    with pytest.raises(StorageError, match="extra"):
        writer.write(table)
    assert writer.close() == []
    assert files_under(location) == []


@pytest.mark.parametrize(
    "face_box",
    [None, {"x": 1, "y": 2, "w": 3}, {"x": 1, "y": 2, "w": 3, "h": None}],
    ids=["null-struct", "missing-member", "null-member"],
)
def test_curated_face_box_is_required_throughout(location, make_curated_row, files_under, face_box):
    row = {**make_curated_row(0), "face_box": face_box}
    writer = ShardWriter(location, location.path("d"), CURATED_SCHEMA)
    with pytest.raises(StorageError, match="face_box"):
        writer.write([row])
    assert writer.close() == []
    assert files_under(location) == []


# -- aborted writes ------------------------------------------------------------------------


def test_exception_in_the_block_leaves_no_file(location, make_raw_row, files_under):
    sizing = ShardSizing(rows_per_row_group=2, max_rows_per_shard=100)
    writer = ShardWriter(location, location.path("d"), RAW_SCHEMA, sizing)
    with pytest.raises(RuntimeError, match="boom"), writer:
        writer.write([make_raw_row(i) for i in range(5)])  # two row groups in the file
        assert writer.shards == []
        raise RuntimeError("boom")

    assert files_under(location) == []  # no shard, no temporary file


def test_exception_after_a_rotation_keeps_only_complete_shards(location, make_raw_row, files_under):
    sizing = ShardSizing(rows_per_row_group=2, max_rows_per_shard=4)
    directory = location.path("d")
    writer = ShardWriter(location, directory, RAW_SCHEMA, sizing)
    with pytest.raises(RuntimeError, match="boom"), writer:
        writer.write([make_raw_row(i) for i in range(7)])  # shard 0 done, shard 1 open
        raise RuntimeError("boom")

    assert [s.path for s in writer.shards] == ["part-00000.parquet"]
    assert files_under(location) == ["d/part-00000.parquet"]
    verify_shard(location, directory, writer.shards[0])


def test_abort_then_write_again_starts_clean(location, make_raw_row, files_under):
    directory = location.path("d")
    first = ShardWriter(location, directory, RAW_SCHEMA, ShardSizing(rows_per_row_group=1))
    first.write([make_raw_row(i) for i in range(3)])
    first.abort()
    del first

    with ShardWriter(location, directory, RAW_SCHEMA) as second:
        second.write([make_raw_row(9)])
    assert files_under(location) == ["d/part-00000.parquet"]
    verify_shard(location, directory, second.shards[0])
    assert read_table(location, _paths(directory, second.shards)).num_rows == 1
