"""ingest: a folder of identity sub-folders becomes a resumable RAW run with rejections."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from facescale.errors import FacescaleError
from facescale.scraper.ingest import identity_folders, ingest
from facescale.storage import IdentityRegistry, Location, RawStore, read_table

PEOPLE = ["Abdullah_Gul", "Adam_Sandler", "Alejandro_Toledo"]  # 4+ photos each


@pytest.fixture
def photos(tmp_path: Path, lfw_dev: Path) -> Path:
    """Three identities of real photos plus trouble: a duplicate, a truncated file, a non-image."""
    root = tmp_path / "photos"
    for person in PEOPLE:
        dest = root / person
        dest.mkdir(parents=True)
        for src in sorted((lfw_dev / person).glob("*.jpg"))[:4]:
            shutil.copy(src, dest / src.name)
    first = sorted((root / PEOPLE[0]).glob("*.jpg"))[0]
    shutil.copy(first, root / PEOPLE[0] / "copy_of_first.jpg")
    data = first.read_bytes()
    (root / PEOPLE[1] / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / PEOPLE[2] / "page.png").write_bytes(b"<html>nope</html>")
    (root / PEOPLE[2] / "notes.txt").write_text("ignored: not an image suffix")
    return root


@pytest.fixture
def stores(tmp_path: Path) -> tuple[RawStore, IdentityRegistry]:
    location = Location.from_uri(str(tmp_path / "store"))
    return RawStore(location), IdentityRegistry(location)


def _rows(store: RawStore, run_ids: list[str] | None = None) -> list[dict]:
    return read_table(store.location, store.shard_paths(run_ids)).to_pylist()


def test_ingest_stores_photos_and_rejections(photos: Path, stores: tuple[RawStore, IdentityRegistry]) -> None:
    store, registry = stores
    summary = ingest(photos, store, registry, "run-1")
    rows = _rows(store)
    assert len(rows) == 3 * 4 + 3  # the .txt file is not an image candidate
    assert summary.accepted == 12
    assert summary.rejected == Counter({"duplicate": 1, "corrupt": 1, "not_an_image": 1})
    assert [i.name for i in registry.list()] == [p.replace("_", " ") for p in PEOPLE]
    accepted = [r for r in rows if r["error"] is None]
    assert all(r["image"] and r["width"] == 250 and r["content_type"] == "image/jpeg" for r in accepted)
    assert len({r["image_id"] for r in accepted}) == 12
    assert all(r["image"] is None for r in rows if r["error"])
    assert {r["identity_slug"] for r in rows} == {"abdullah-gul", "adam-sandler", "alejandro-toledo"}
    assert store.get("run-1").finished


def test_rerun_is_a_no_op_and_later_runs_skip_known_images(
    photos: Path, stores: tuple[RawStore, IdentityRegistry]
) -> None:
    store, registry = stores
    ingest(photos, store, registry, "run-1")
    before = _rows(store)
    again = ingest(photos, store, registry, "run-1")
    assert _rows(store) == before and again.accepted == 12
    second = ingest(photos, store, registry, "run-2")
    assert second.accepted == 0
    assert second.rejected["duplicate"] == 13  # 12 known photos + the in-folder copy


def test_interrupted_ingest_resumes_without_loss_or_duplicates(
    photos: Path, stores: tuple[RawStore, IdentityRegistry], tmp_path: Path
) -> None:
    store, registry = stores

    def crash_after_second(name: str) -> None:
        if name == PEOPLE[1].replace("_", " "):
            raise KeyboardInterrupt  # like Ctrl-C between folders

    with pytest.raises(KeyboardInterrupt):
        ingest(photos, store, registry, "run-1", commit_rows=1, on_folder=crash_after_second)
    partial = store.get("run-1")
    assert not partial.finished and partial.completed == ["abdullah-gul", "adam-sandler"]
    resumed = ingest(photos, store, registry, "run-1", commit_rows=1)
    assert resumed.skipped_identities == 2

    reference_location = Location.from_uri(str(tmp_path / "reference"))
    reference = RawStore(reference_location)
    ingest(photos, reference, IdentityRegistry(reference_location), "run-1")

    def key(r: dict) -> tuple:
        return (r["source_url"], r["error"] or "", r["image_id"] or "")

    assert sorted(map(key, _rows(store))) == sorted(map(key, _rows(reference)))


def test_empty_or_missing_folder_is_a_clear_error(tmp_path: Path, stores: tuple[RawStore, IdentityRegistry]) -> None:
    store, registry = stores
    with pytest.raises(FacescaleError, match="not a directory"):
        ingest(tmp_path / "missing", store, registry, "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FacescaleError, match="no identity folders"):
        ingest(tmp_path / "empty", store, registry, "r")
    assert store.run_ids() == []


def test_folders_are_chosen_by_their_photo_count(tmp_path: Path) -> None:
    """min_images and max_images bound the photos a folder holds (both inclusive); limit takes the first by name."""
    for name, count in {"A": 1, "B": 2, "C": 9, "D": 10, "E": 3}.items():
        (tmp_path / name).mkdir()
        for i in range(count):
            (tmp_path / name / f"{i}.jpg").write_bytes(b"x")
        (tmp_path / name / "notes.txt").write_text("not counted")
    names = lambda **kw: [d.name for d in identity_folders(tmp_path, **kw)]  # noqa: E731
    assert names(min_images=2, max_images=9) == ["B", "C", "E"]
    assert names(min_images=10) == ["D"]
    assert names(max_images=2) == ["A", "B"]
    assert names(min_images=2, max_images=9, limit=2) == ["B", "C"]
    with pytest.raises(FacescaleError, match="below min_images"):
        identity_folders(tmp_path, min_images=5, max_images=4)
