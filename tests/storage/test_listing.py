"""The listing index (storage/listing.py) through the stores that use it: what it serves, what it re-reads."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from facescale.storage import DatasetStore, IdentityEntry, Location, Manifest, RawStore, ShardInfo
from facescale.storage.listing import INDEX_FILE


def _raw(tmp_path: Path) -> tuple[Location, RawStore]:
    location = Location.from_uri(str(tmp_path / "store"))
    return location, RawStore(location)


def _run(raw: RawStore, run_id: str, units: list[str], *, finished: bool) -> None:
    with raw.open(run_id) as writer:
        writer.commit(units, finished=finished)


def _indexed(raw: RawStore) -> dict[str, dict[str, object]]:
    return json.loads(Path(raw.location.path(INDEX_FILE)).read_text())["entries"]


def test_finished_runs_are_indexed_and_served_from_the_index(tmp_path: Path) -> None:
    _, raw = _raw(tmp_path)
    _run(raw, "run-a", ["ada"], finished=True)
    _run(raw, "run-b", ["alan"], finished=False)
    assert [r.run_id for r in raw.list()] == ["run-a", "run-b"]
    assert set(_indexed(raw)) == {"run-a"}  # an unfinished run may still change: never indexed

    # the index is what a later listing serves: a record changed behind its back is not read again
    record = Path(raw.run_dir("run-a"), "run.json")
    record.write_text(record.read_text().replace('"ada"', '"someone-else"'))
    assert next(r for r in raw.list() if r.run_id == "run-a").completed == ["ada"]


def test_an_unfinished_run_is_read_every_time_until_it_finishes(tmp_path: Path) -> None:
    _, raw = _raw(tmp_path)
    _run(raw, "run-a", ["ada"], finished=False)
    assert raw.list()[0].completed == ["ada"]
    _run(raw, "run-a", ["alan"], finished=True)  # resumed and finished
    listed = raw.list()[0]
    assert listed.completed == ["ada", "alan"] and listed.finished
    assert _indexed(raw)["run-a"]["finished"] is True


def test_a_removed_entry_leaves_every_listing_and_then_the_index(tmp_path: Path) -> None:
    location, raw = _raw(tmp_path)
    _run(raw, "run-a", ["ada"], finished=True)
    _run(raw, "run-b", ["alan"], finished=True)
    raw.list()
    location.remove_tree(raw.run_dir("run-a"))
    assert [r.run_id for r in raw.list()] == ["run-b"]
    assert set(_indexed(raw)) == {"run-b"}


def test_an_uncommitted_directory_is_not_listed(tmp_path: Path) -> None:
    location, raw = _raw(tmp_path)
    _run(raw, "run-a", ["ada"], finished=True)
    location.makedirs(raw.run_dir("run-half"))  # a writer died before its record
    assert [r.run_id for r in raw.list()] == ["run-a"]
    assert "run-half" not in _indexed(raw)


@pytest.mark.parametrize("content", ["{not json", '{"format": 99, "entries": {}}', '{"format": 1, "entries": 3}',
                                     '{"format": 1, "entries": {"run-a": {"run_id": 5}}}'])
def test_a_malformed_index_is_rebuilt_from_the_entries(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, raw = _raw(tmp_path)
    _run(raw, "run-a", ["ada"], finished=True)
    Path(raw.location.path(INDEX_FILE)).write_text(content)
    with caplog.at_level(logging.WARNING):
        assert [r.completed for r in raw.list()] == [["ada"]]
    assert set(_indexed(raw)) == {"run-a"}


def test_the_newest_version_reads_one_manifest_whatever_the_history(tmp_path: Path) -> None:
    location = Location.from_uri(str(tmp_path / "store"))
    store = DatasetStore(location)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for day in range(5):
        manifest = Manifest(
            version_id=f"v{day}", created_at=start + timedelta(days=day),
            identities=[IdentityEntry(name="Ada Lovelace", slug="ada-lovelace", label=0)],
            shards=[ShardInfo(path="shards/part-0.parquet", rows=1, bytes=1, sha256="0" * 64)],
            published_at=start if day < 3 else None,  # v3 and v4 failed the gate
        )
        location.makedirs(store.version_dir(manifest.version_id))
        location.write_bytes_atomic(store.manifest_path(manifest.version_id), manifest.to_json())
    newest = store.latest(published_only=False)
    published = store.latest()
    assert newest is not None and newest.version_id == "v4"
    assert published is not None and published.version_id == "v2"
    stamps = json.loads(Path(store.location.path(INDEX_FILE)).read_text())["entries"]
    assert sorted(stamps) == [f"v{d}" for d in range(5)] and set(stamps["v4"]) == {"version_id", "created_at"}
    assert store.exists("v4") and not store.exists("v9")
