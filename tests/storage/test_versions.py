"""CURATED dataset versions: lifecycle, errors, aborted writes and writers killed mid-way."""

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

from facescale.errors import ConflictError, IntegrityError, ManifestError, NotFoundError
from facescale.storage import (
    CURATED_SCHEMA,
    DatasetStore,
    Location,
    ShardSizing,
    ShardTarget,
    ValidationSummary,
    batch_name,
    read_table,
)

SIZING = ShardSizing(rows_per_row_group=2, max_rows_per_shard=3)


@pytest.fixture
def store(location: Location) -> DatasetStore:
    return DatasetStore(location, SIZING)


def _commit(store, version_id, rows, identities_for, **create):
    with store.create(version_id, **create) as writer:
        writer.write(rows)
        return writer.commit(identities_for(rows), notes={"rows": len(rows)})


def _read(store: DatasetStore, version_id: str) -> list[dict]:
    return [row for batch in store.iter_batches(version_id) for row in batch.to_pylist()]


def _passed() -> ValidationSummary:
    return ValidationSummary(success=True, suite="curated", statistics={"evaluated": 3})


# -- lifecycle -----------------------------------------------------------------------------


def test_create_commit_get_list(store, make_curated_row, identities_for):
    rows = [make_curated_row(i) for i in range(8)]
    manifest = _commit(store, "v1", rows, identities_for, config={"seed": 1})

    assert manifest.rows == 8
    assert [s.rows for s in manifest.shards] == [3, 3, 2]
    assert all(s.path.startswith("shards/") for s in manifest.shards)
    assert store.get("v1") == manifest
    assert [m.version_id for m in store.list()] == ["v1"]
    assert store.version_ids() == ["v1"]
    assert manifest.config == {"seed": 1}
    assert manifest.notes == {"rows": 8}
    assert {i.name: i.counts for i in manifest.identities} == {
        i.name: i.counts for i in identities_for(rows)
    }
    assert manifest.split_counts() == {"train": 4, "val": 2, "test": 2}
    assert _read(store, "v1") == rows
    assert store.verify("v1") == manifest


def test_nothing_is_visible_before_commit(store, make_curated_row, identities_for):
    writer = store.create("v1")
    writer.write([make_curated_row(i) for i in range(7)])  # two shards already complete
    assert store.version_ids() == []
    assert store.list() == []
    assert store.uncommitted() == ["v1"]
    with pytest.raises(NotFoundError):
        store.get("v1")
    writer.commit(identities_for([]))
    assert store.version_ids() == ["v1"]
    assert store.uncommitted() == []


def test_empty_version_reads_as_an_empty_table(store, identities_for):
    manifest = _commit(store, "empty", [], identities_for)
    assert manifest.shards == []
    assert store.verify("empty").rows == 0
    table = read_table(store.location, store.shard_paths(manifest), schema=CURATED_SCHEMA)
    assert table.num_rows == 0
    assert table.schema.equals(CURATED_SCHEMA)


def test_versions_are_listed_oldest_first_and_parent_defaults_to_newest(
    store, make_curated_row, identities_for
):
    rows = [make_curated_row(0)]
    first = _commit(store, "zz-first", rows, identities_for)
    second = _commit(store, "aa-second", rows, identities_for)
    orphan = _commit(store, "mm-orphan", rows, identities_for, parent=None)

    assert first.parent is None
    assert second.parent == "zz-first"
    assert orphan.parent is None
    # Oldest first by creation time, not by name.
    assert [m.version_id for m in store.list()] == ["zz-first", "aa-second", "mm-orphan"]
    assert store.latest(published_only=False).version_id == "mm-orphan"
    assert _commit(store, "next", rows, identities_for).parent == "mm-orphan"


def test_unknown_parent_is_refused(store):
    with pytest.raises(NotFoundError, match="nope"):
        store.create("v1", parent="nope")


def test_publish_success_sets_published_at(store, make_curated_row, identities_for):
    _commit(store, "v1", [make_curated_row(0)], identities_for)
    assert store.latest() is None  # nothing published yet

    published = store.publish("v1", _passed())

    assert published.published and published.published_at is not None
    again = store.get("v1")
    assert again.published_at == published.published_at
    assert again.validation.success and again.validation.statistics == {"evaluated": 3}
    assert store.latest().version_id == "v1"
    store.verify("v1")  # shards untouched by publishing


def test_failed_validation_is_recorded_but_not_published(store, make_curated_row, identities_for):
    _commit(store, "v1", [make_curated_row(0)], identities_for)
    store.publish("v1", _passed())
    _commit(store, "v2", [make_curated_row(1)], identities_for)

    failed = ValidationSummary(success=False, suite="curated", failures=["label_balance"])
    store.publish("v2", failed)

    v2 = store.get("v2")
    assert not v2.published and v2.published_at is None
    assert v2.validation == failed
    assert store.latest().version_id == "v1"
    assert store.latest(published_only=False).version_id == "v2"


def test_committed_version_cannot_be_recreated(store, make_curated_row, identities_for):
    rows = [make_curated_row(i) for i in range(4)]
    _commit(store, "v1", rows, identities_for)
    with pytest.raises(ConflictError, match="v1"):
        store.create("v1")
    assert _read(store, "v1") == rows
    store.verify("v1")


def test_a_version_is_committed_once(store, make_curated_row, identities_for):
    rows = [make_curated_row(i) for i in range(4)]
    with store.create("v1") as writer:
        writer.write(rows)
        first = writer.commit(identities_for(rows))
        with pytest.raises(ConflictError):
            writer.commit([])
    assert store.get("v1") == first
    assert _read(store, "v1") == rows


@pytest.mark.parametrize("version_id", ["nope", "../v1", "a/b", "", ".hidden", "x" * 200])
def test_unknown_or_invalid_version_is_not_found(store, make_curated_row, identities_for, version_id):
    _commit(store, "v1", [make_curated_row(0)], identities_for)
    with pytest.raises(NotFoundError):
        store.get(version_id)
    with pytest.raises(NotFoundError):
        store.verify(version_id)
    with pytest.raises(NotFoundError):
        list(store.iter_batches(version_id))
    with pytest.raises(NotFoundError):
        store.publish(version_id, _passed())


def test_invalid_version_id_cannot_be_created(store):
    with pytest.raises(NotFoundError):
        store.create("../escape")


# -- malformed manifests ---------------------------------------------------------------------


def _manifest_json(store, version_id) -> dict:
    return json.loads(store.location.read_bytes(store.manifest_path(version_id)))


@pytest.mark.parametrize(
    "damage",
    ["not-json", "not-utf8", "wrong-field-type", "unknown-field", "missing-field", "other-version"],
)
def test_malformed_manifest_raises_manifest_error_naming_the_file(
    store, make_curated_row, identities_for, damage
):
    _commit(store, "v1", [make_curated_row(0)], identities_for)
    path = store.manifest_path("v1")
    doc = _manifest_json(store, "v1")
    if damage == "not-json":
        data = b'{"version_id": "v1", '
    elif damage == "not-utf8":
        data = b"\x80\x81 manifest"
    else:
        if damage == "wrong-field-type":
            doc["shards"] = "all of them"
        elif damage == "unknown-field":
            doc["surprise"] = 1
        elif damage == "missing-field":
            del doc["version_id"]
        else:
            doc["version_id"] = "v9"
        data = json.dumps(doc).encode()
    store.location.fs.pipe_file(path, data)
    shown = store.location.display(path)

    with pytest.raises(ManifestError) as get_error:
        store.get("v1")
    assert shown in str(get_error.value)
    with pytest.raises(ManifestError) as list_error:
        store.list()
    assert shown in str(list_error.value)


# -- aborted and damaged writes -----------------------------------------------------------------


def test_aborted_writer_leaves_no_version_and_the_id_stays_usable(
    store, make_curated_row, identities_for
):
    with pytest.raises(RuntimeError, match="boom"), store.create("v1") as writer:
        writer.write([make_curated_row(i) for i in range(7)])
        raise RuntimeError("boom")
    assert store.version_ids() == []
    with pytest.raises(NotFoundError):
        store.get("v1")

    rows = [make_curated_row(i) for i in range(100, 104)]
    manifest = _commit(store, "v1", rows, identities_for)
    assert manifest.rows == 4
    assert _read(store, "v1") == rows  # nothing of the aborted write is read back
    store.verify("v1")
    leftovers = store.location.fs.find(store.version_dir("v1"))
    assert sorted(posixpath.basename(p) for p in leftovers) == [
        "manifest.json",
        "part-00000.parquet",
        "part-00001.parquet",
    ]


def test_writer_left_without_commit_is_invisible(store, make_curated_row):
    with store.create("v1") as writer:
        writer.write([make_curated_row(i) for i in range(5)])
    assert store.version_ids() == []
    assert store.latest(published_only=False) is None


def test_verify_catches_a_tampered_shard(store, make_curated_row, identities_for):
    manifest = _commit(store, "v1", [make_curated_row(i) for i in range(6)], identities_for)
    path = store.shard_paths(manifest)[1]
    data = bytearray(store.location.fs.cat_file(path))
    data[-20] ^= 0xFF
    store.location.fs.pipe_file(path, bytes(data))

    with pytest.raises(IntegrityError, match="part-00001"):
        store.verify("v1")


def test_verify_catches_a_missing_shard(store, make_curated_row, identities_for):
    manifest = _commit(store, "v1", [make_curated_row(i) for i in range(6)], identities_for)
    store.location.fs.rm_file(store.shard_paths(manifest)[0])

    with pytest.raises(IntegrityError, match="missing"):
        store.verify("v1")
    with pytest.raises(IntegrityError, match="missing"):
        list(store.iter_batches("v1"))


# -- shards written by other processes (Ray tasks) ------------------------------------------


def test_shards_written_elsewhere_are_adopted_and_strays_swept(tmp_path, make_curated_row, identities_for):
    import concurrent.futures
    import multiprocessing
    import pickle

    store = DatasetStore(Location.from_uri(str(tmp_path)), SIZING)
    rows = [make_curated_row(i) for i in range(10)]
    with store.create("v1") as writer:
        writer.write(rows[:2])
        target = pickle.loads(pickle.dumps(writer.target))  # what a remote worker receives
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
            first = pool.submit(target.write, rows[2:6], batch_name([r["sample_id"] for r in rows[2:6]]))
            second = pool.submit(target.write, rows[6:], batch_name([r["sample_id"] for r in rows[6:]]))
            infos = first.result() + second.result()
        # a task that wrote its shard, died before reporting it and was retried with another batch
        target.write(rows[6:8], "part-stray")
        writer.adopt(infos)
        manifest = writer.commit(identities_for(rows))

    assert sorted(_read(store, "v1"), key=lambda r: r["sample_id"]) == sorted(rows, key=lambda r: r["sample_id"])
    assert manifest.rows == 10
    assert [s.rows for s in manifest.shards] == [2, 3, 1, 3, 1]  # the writer's own shard first
    names = store.root.list_files(posixpath.join(store.version_dir("v1"), "shards"))
    assert names == sorted(posixpath.basename(s.path) for s in manifest.shards)  # the stray is gone
    assert store.verify("v1") == manifest


def test_a_batch_written_again_under_its_name_replaces_the_first_copy(location, make_curated_row):
    target = ShardTarget(location, location.path("out"), CURATED_SCHEMA, SIZING)
    rows = [make_curated_row(i) for i in range(4)]
    name = batch_name(r["sample_id"] for r in rows)

    first = target.write(rows, name)
    again = target.write(list(reversed(rows)), batch_name(r["sample_id"] for r in reversed(rows)))

    assert [s.path for s in again] == [s.path for s in first]  # the name depends on the keys, not their order
    assert location.list_files(location.path("out")) == [s.path for s in first]


# -- a writer killed with SIGKILL -----------------------------------------------------------
#
# The child (_writer_proc.py) writes v2 (400 rows in 40 shards) on top of a committed v1.
# Whatever the moment it dies, readers must see v1 alone, or v1 and a complete v2.

V2_FIRST, V2_ROWS, V2_ROWS_PER_SHARD = 1000, 400, 10
V2_SHARDS = V2_ROWS // V2_ROWS_PER_SHARD
CHILD_ARGS = [
    "version",
    *("--first", str(V2_FIRST), "--rows", str(V2_ROWS)),
    *("--rows-per-group", "3", "--rows-per-shard", str(V2_ROWS_PER_SHARD)),
]


def _store_with_v1(root: Path, make_curated_row, identities_for):
    store = DatasetStore(Location.from_uri(str(root)), SIZING)
    rows = [make_curated_row(i) for i in range(7)]
    _commit(store, "v1", rows, identities_for)
    return store, rows


def _run_child(writer_proc: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(writer_proc), str(root), *CHILD_ARGS, *extra],
        cwd=writer_proc.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_v1_intact(store: DatasetStore, v1_rows: list[dict]) -> None:
    store.verify("v1")
    assert _read(store, "v1") == v1_rows


def _assert_v2_complete(store: DatasetStore, make_curated_row) -> None:
    manifest = store.verify("v2")
    assert manifest.parent == "v1"
    assert [s.rows for s in manifest.shards] == [V2_ROWS_PER_SHARD] * V2_SHARDS
    expected = [make_curated_row(V2_FIRST + i) for i in range(V2_ROWS)]
    got = _read(store, "v2")
    assert len({r["sample_id"] for r in got}) == len(got)  # no duplicates
    assert sorted(got, key=lambda r: r["sample_id"]) == sorted(expected, key=lambda r: r["sample_id"])


def _finish_after_kill(store, v1_rows, writer_proc, root, make_curated_row) -> None:
    """What every kill must leave, then a rerun of the writer to completion."""
    assert store.version_ids() in (["v1"], ["v1", "v2"])
    _assert_v1_intact(store, v1_rows)
    if store.version_ids() == ["v1"]:
        with pytest.raises(NotFoundError):
            store.get("v2")
        assert [m.version_id for m in store.list()] == ["v1"]
        rerun = _run_child(writer_proc, root)
        assert rerun.returncode == 0, rerun.stderr
    assert store.version_ids() == ["v1", "v2"]
    assert store.uncommitted() == []
    _assert_v1_intact(store, v1_rows)
    _assert_v2_complete(store, make_curated_row)
    names = [posixpath.basename(p) for p in store.location.fs.find(store.version_dir("v2"))]
    assert not [n for n in names if n.startswith("_tmp-")]  # the rerun cleared the debris


def _v2_files(root: Path) -> list[str]:
    base = root / "datasets" / "v2"
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("point", "debris"),
    [
        ("shard-write:3", "a half-written third shard under a temporary name"),
        ("shard-commit:5", "five complete shards, the sixth not begun"),
        ("meta-write:1", "every shard, half a manifest under a temporary name"),
        ("meta-rename:1", "every shard, the whole manifest under a temporary name"),
        ("meta-committed:1", "nothing: the manifest was renamed into place"),
    ],
)
def test_writer_killed_at_a_chosen_point(
    tmp_path, writer_proc, make_curated_row, identities_for, point, debris
):
    root = tmp_path / "store"
    store, v1_rows = _store_with_v1(root, make_curated_row, identities_for)

    killed = _run_child(writer_proc, root, "--kill", point)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    files = _v2_files(root)
    temporary = [f for f in files if Path(f).name.startswith("_tmp-")]
    shards = [f for f in files if f.startswith("shards/part-")]
    if point == "shard-write:3":
        assert shards == ["shards/part-00000.parquet", "shards/part-00001.parquet"]
        assert len(temporary) == 1 and temporary[0].endswith("part-00002.parquet")
    elif point == "shard-commit:5":
        assert len(shards) == 5 and temporary == []
    elif point.startswith("meta-"):
        assert len(shards) == V2_SHARDS
        if point == "meta-committed:1":
            assert temporary == [] and "manifest.json" in files
        else:
            assert len(temporary) == 1 and temporary[0].endswith("manifest.json")
            assert "manifest.json" not in files
            text = (root / "datasets" / "v2" / temporary[0]).read_bytes()
            if point == "meta-rename:1":
                assert json.loads(text)["version_id"] == "v2"  # complete, but not visible
    _finish_after_kill(store, v1_rows, writer_proc, root, make_curated_row)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_writer_killed_at_a_random_time(tmp_path, writer_proc, make_curated_row, identities_for, seed):
    root = tmp_path / "store"
    store, v1_rows = _store_with_v1(root, make_curated_row, identities_for)
    proc = subprocess.Popen(
        [sys.executable, str(writer_proc), str(root), *CHILD_ARGS],
        cwd=writer_proc.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"  # its first shards are written
        # The rest of v2 takes about half a second here: land anywhere in it, or after it.
        time.sleep(random.Random(seed).uniform(0.0, 0.8))
        proc.kill()
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    _finish_after_kill(store, v1_rows, writer_proc, root, make_curated_row)
