"""RAW runs: commits with completed units, resumption, finished runs, killed writers."""

from __future__ import annotations

import json
import posixpath
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facescale.errors import ConflictError, ManifestError, NotFoundError
from facescale.storage import Location, RawStore, ShardSizing

SIZING = ShardSizing(rows_per_row_group=2, max_rows_per_shard=3)


@pytest.fixture
def store(location: Location) -> RawStore:
    return RawStore(location, SIZING)


def _rows(make_raw_row, first: int, n: int, run_id: str = "run-1") -> list[dict]:
    return [make_raw_row(first + i, run_id, rejected=(i % 4 == 3)) for i in range(n)]


def _read(store: RawStore, run_ids=None) -> list[dict]:
    return [row for batch in store.iter_batches(run_ids) for row in batch.to_pylist()]


def test_write_and_commit_with_completed_units(location, store, make_raw_row):
    unit_a, unit_b = _rows(make_raw_row, 0, 5), _rows(make_raw_row, 5, 4)
    writer = store.open("run-1", meta={"engine": "local"})
    writer.write(unit_a)
    first = writer.commit(["kw-a"])
    writer.write(unit_b[:1])
    writer.write(unit_b[1:])
    second = writer.commit(["kw-b", "kw-a", "kw-b"], meta={"pages": 2})

    assert first.completed == ["kw-a"] and first.rows == 5
    assert second.completed == ["kw-a", "kw-b"]  # each unit once, in order of completion
    assert [s.rows for s in second.shards] == [3, 2, 3, 1]  # shards never span commits
    assert [s.path for s in second.shards] == [f"part-{i:05d}.parquet" for i in range(4)]
    assert second.meta == {"engine": "local", "pages": 2}
    assert writer.is_completed("kw-b") and not writer.is_completed("kw-c")

    reopened = RawStore(location, SIZING)  # a fresh handle on the same root
    assert reopened.run_ids() == ["run-1"]
    assert reopened.get("run-1") == second
    assert _read(reopened) == unit_a + unit_b
    assert reopened.verify("run-1") == second
    assert [r["error"] for r in _read(reopened) if r["image"] is None] == ["http_status"] * 2


def test_nothing_is_visible_before_the_first_commit(store, make_raw_row):
    writer = store.open("run-1")
    writer.write(_rows(make_raw_row, 0, 7))  # two shards complete on disk already
    assert store.run_ids() == []
    assert store.list() == []
    with pytest.raises(NotFoundError):
        store.get("run-1")


def test_commit_without_rows_records_units(store):
    writer = store.open("run-1")
    record = writer.commit(["kw-empty"])
    assert record.shards == [] and record.completed == ["kw-empty"]
    assert store.get("run-1").completed == ["kw-empty"]
    assert _read(store) == []


def test_rows_not_committed_are_dropped(store, make_raw_row, files_under):
    committed = _rows(make_raw_row, 0, 3)
    with store.open("run-1") as writer:
        writer.write(committed)
        writer.commit(["a"])
        writer.write(_rows(make_raw_row, 100, 2))  # still buffered / in an open shard
    assert _read(store) == committed
    assert store.get("run-1").completed == ["a"]
    assert not [f for f in files_under(store.location) if "_tmp-" in f]


def test_resume_after_a_writer_that_never_committed(store, make_raw_row, files_under):
    unit_a, unit_b = _rows(make_raw_row, 0, 4), _rows(make_raw_row, 4, 8)
    dead = store.open("run-1")
    dead.write(unit_a)
    dead.commit(["a"])
    dead.write(unit_b)  # part-00002 and part-00003 complete on disk, never committed
    shards = [f for f in files_under(store.location) if f.startswith("run-1/part-")]
    assert shards == [f"run-1/part-{i:05d}.parquet" for i in range(4)]
    assert [s.path for s in store.get("run-1").shards] == ["part-00000.parquet", "part-00001.parquet"]
    # The dead writer is never used again (its process would simply be gone); its open
    # shard stays behind under a temporary name while the run is resumed.

    assert _read(store) == unit_a  # the orphans are never read
    writer = store.open("run-1")
    assert writer.is_completed("a") and not writer.is_completed("b")
    redo = [{**row, "page_url": "http://127.0.0.1/retry"} for row in unit_b]  # differs from orphans
    writer.write(redo)
    record = writer.commit(["b"], finished=True)

    assert record.completed == ["a", "b"] and record.finished
    got = _read(store)
    assert got == unit_a + redo  # no row of the dead writer, no duplicate
    assert len({r["source_url"] for r in got}) == len(got)
    store.verify("run-1")  # the orphan files were overwritten by the resumed shards
    dead.abort()  # release its temporary file: nothing committed changes
    store.verify("run-1")
    assert _read(store) == unit_a + redo


def test_finished_run_refuses_reopening(store, make_raw_row):
    writer = store.open("run-1")
    writer.write(_rows(make_raw_row, 0, 2))
    writer.commit(["a"], finished=True)

    with pytest.raises(ConflictError, match="run-1"):
        store.open("run-1")
    assert store.get("run-1").finished
    other = store.open("run-2")  # another id is fine
    other.write(_rows(make_raw_row, 50, 1, "run-2"))
    other.commit(finished=True)
    assert store.run_ids() == ["run-1", "run-2"]
    assert [r["run_id"] for r in _read(store, ["run-2"])] == ["run-2"]
    assert len(_read(store)) == 3


@pytest.mark.parametrize("run_id", ["nope", "../run-1", "a/b", ""])
def test_unknown_or_invalid_run_is_not_found(store, run_id):
    with pytest.raises(NotFoundError):
        store.get(run_id)
    with pytest.raises(NotFoundError):
        store.verify(run_id)
    if run_id != "nope":
        with pytest.raises(NotFoundError):
            store.open(run_id)


@pytest.mark.parametrize("data", [b"{not json", json.dumps({"run_id": "run-1", "shards": 3}).encode()])
def test_malformed_run_record_is_a_manifest_error(store, data):
    store.open("run-1").commit(["a"])
    path = posixpath.join(store.run_dir("run-1"), "run.json")
    store.location.fs.pipe_file(path, data)
    with pytest.raises(ManifestError) as error:
        store.get("run-1")
    assert store.location.display(path) in str(error.value)
    with pytest.raises(ManifestError):
        store.open("run-1")


# -- a writer killed with SIGKILL -----------------------------------------------------------
#
# The child writes run-1 as 20 units of 7 rows, committing after each unit (two shards per
# unit: 4 + 3 rows). Killed anywhere, then restarted, it must end with exactly the rows of
# an uninterrupted run.

UNITS, ROWS_PER_UNIT = 20, 7
CHILD_ARGS = [
    "raw",
    *("--units", str(UNITS), "--rows", str(ROWS_PER_UNIT)),
    *("--rows-per-group", "2", "--rows-per-shard", "4"),
]


def _child(writer_proc: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, str(writer_proc), str(root), *CHILD_ARGS, *extra]


def _run_child(writer_proc: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _child(writer_proc, root, *extra),
        cwd=writer_proc.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _by_key(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["source_url"])


@pytest.fixture(scope="module")
def uninterrupted_rows(tmp_path_factory, writer_proc) -> list[dict]:
    root = tmp_path_factory.mktemp("uninterrupted")
    done = _run_child(writer_proc, root)
    assert done.returncode == 0, done.stderr
    store = RawStore(Location.from_uri(str(root)))
    assert store.get("run-1").finished
    rows = _read(store)
    assert len(rows) == UNITS * ROWS_PER_UNIT
    return rows


def _check_committed_state(store: RawStore) -> None:
    """After a kill: whatever is committed is whole units, verified, without duplicates."""
    if "run-1" not in store.run_ids():
        return
    record = store.verify("run-1")
    rows = _read(store)
    units = {r["source_url"].rsplit("/", 1)[1].split(".")[0] for r in rows}
    expected_units = {f"unit-{int(u) // ROWS_PER_UNIT:02d}" for u in units}
    assert expected_units == set(record.completed)
    assert len(rows) == ROWS_PER_UNIT * len(record.completed)
    assert len({r["source_url"] for r in rows}) == len(rows)


def _restart_and_compare(store, writer_proc, root, uninterrupted_rows) -> None:
    rerun = _run_child(writer_proc, root)
    assert rerun.returncode == 0, rerun.stderr
    record = store.verify("run-1")
    assert record.finished
    assert record.completed == [f"unit-{u:02d}" for u in range(UNITS)]
    got = _read(store)
    assert len({r["source_url"] for r in got}) == len(got)  # no duplicates
    assert _by_key(got) == _by_key(uninterrupted_rows)  # no loss


@pytest.mark.parametrize(
    ("point", "units_done"),
    [
        ("shard-write:5", 2),  # mid-shard, in the third unit
        ("shard-commit:7", 3),  # between the two shards of the fourth unit
        ("meta-write:4", 3),  # half-way through run.json after the fourth unit
        ("meta-committed:4", 4),  # right after the fourth unit was committed
    ],
)
def test_raw_writer_killed_at_a_chosen_point(tmp_path, writer_proc, uninterrupted_rows, point, units_done):
    store = RawStore(Location.from_uri(str(tmp_path)))
    killed = _run_child(writer_proc, tmp_path, "--kill", point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    _check_committed_state(store)
    assert store.get("run-1").completed == [f"unit-{u:02d}" for u in range(units_done)]
    _restart_and_compare(store, writer_proc, tmp_path, uninterrupted_rows)


@pytest.mark.parametrize("seed", [11, 12])
def test_raw_writer_killed_at_a_random_time(tmp_path, writer_proc, uninterrupted_rows, seed):
    store = RawStore(Location.from_uri(str(tmp_path)))
    proc = subprocess.Popen(
        _child(writer_proc, tmp_path),
        cwd=writer_proc.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"  # its first unit is committed
        time.sleep(random.Random(seed).uniform(0.0, 0.6))
        proc.kill()
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()

    _check_committed_state(store)
    if not store.get("run-1").finished:
        _restart_and_compare(store, writer_proc, tmp_path, uninterrupted_rows)
    else:
        assert _by_key(_read(store)) == _by_key(uninterrupted_rows)
