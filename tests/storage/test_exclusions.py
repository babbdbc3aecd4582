"""The persistent exclusion list: round trip, idempotent adds, manual over auto, malformed files."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from pydantic import ValidationError

from facescale.errors import ManifestError, NotFoundError
from facescale.storage import Location
from facescale.storage.exclusions import REVIEWED_KEEP, Exclusion, ExclusionList
from facescale.storage.layout import EXCLUSIONS_FILE

WHEN = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


def entry(image_id: str, source: str = "auto", reason: str = "wrong_person", slug: str = "ada-lovelace") -> Exclusion:
    return Exclusion(identity_slug=slug, source_image_id=image_id, reason=reason, added_at=WHEN, source=source)


def test_empty_without_file(location: Location) -> None:
    exclusions = ExclusionList(location)
    assert exclusions.load() == []
    assert exclusions.excluded("ada-lovelace") == set()
    assert not location.exists(location.path(EXCLUSIONS_FILE))


def test_round_trip(location: Location) -> None:
    exclusions = ExclusionList(location)
    added = exclusions.add(
        [entry("b" * 64), entry("a" * 64, source="manual", reason="not her"), entry("c" * 64, slug="alan-turing")]
    )
    assert len(added) == 3
    again = ExclusionList(location).load()  # a fresh reader sees the same entries, sorted by key
    assert [e.key for e in again] == [("ada-lovelace", "a" * 64), ("ada-lovelace", "b" * 64), ("alan-turing", "c" * 64)]
    assert again[0] == entry("a" * 64, source="manual", reason="not her")
    assert exclusions.excluded("ada-lovelace") == {"a" * 64, "b" * 64}
    assert exclusions.excluded("alan-turing") == {"c" * 64}
    assert exclusions.excluded("nobody") == set()
    doc = json.loads(location.read_bytes(location.path(EXCLUSIONS_FILE)))
    assert doc["format"] == 1
    assert set(doc["entries"][0]) == {"identity_slug", "source_image_id", "reason", "added_at", "source"}


def test_add_is_idempotent(location: Location) -> None:
    exclusions = ExclusionList(location)
    exclusions.add([entry("x1"), entry("x2", source="manual")])
    before = location.read_bytes(exclusions.path)
    later = Exclusion(identity_slug="ada-lovelace", source_image_id="x1", reason="something else", source="auto")
    assert exclusions.add([entry("x1"), entry("x2", source="manual"), later]) == []
    assert location.read_bytes(exclusions.path) == before  # not even rewritten
    assert exclusions.load()[0].reason == "wrong_person"  # the first entry stays


def test_manual_entry_is_never_overwritten_by_auto(location: Location) -> None:
    exclusions = ExclusionList(location)
    exclusions.add([entry("x1", source="manual", reason="checked by hand")])
    assert exclusions.add([entry("x1", source="auto")]) == []
    (only,) = exclusions.load()
    assert (only.source, only.reason) == ("manual", "checked by hand")


def test_manual_entry_replaces_auto(location: Location) -> None:
    exclusions = ExclusionList(location)
    exclusions.add([entry("x1", source="auto")])
    assert exclusions.add([entry("x1", source="manual", reason="confirmed")]) == [
        entry("x1", source="manual", reason="confirmed").replacing(entry("x1", source="auto"))
    ]
    (only,) = exclusions.load()
    assert only.source == "manual"


def test_reviewed_keep_is_not_excluded_and_blocks_auto(location: Location) -> None:
    exclusions = ExclusionList(location)
    exclusions.add([entry("x1", source="auto"), entry("x2", source="auto")])
    assert [e.source_image_id for e in exclusions.keep("ada-lovelace", ["x1"])] == ["x1"]
    assert exclusions.excluded("ada-lovelace") == {"x2"}
    assert exclusions.reviewed_keep("ada-lovelace") == {"x1"}
    assert exclusions.add([entry("x1", source="auto")]) == []  # the cleaner cannot exclude it again
    assert exclusions.excluded("ada-lovelace") == {"x2"}
    assert exclusions.keep("ada-lovelace", ["x1"]) == []  # idempotent too
    with pytest.raises(ValueError, match="manual only"):
        exclusions.add([entry("x3", source="auto", reason=REVIEWED_KEEP)])


def test_remove(location: Location) -> None:
    exclusions = ExclusionList(location)
    exclusions.add([entry("x1"), entry("x2", source="manual"), entry("x1", slug="alan-turing")])
    removed = exclusions.remove("ada-lovelace", ["x1", "x2", "missing"])
    assert sorted(e.source_image_id for e in removed) == ["x1", "x2"]
    assert exclusions.excluded("ada-lovelace") == set()
    assert exclusions.excluded("alan-turing") == {"x1"}
    assert exclusions.remove("ada-lovelace", ["x1"]) == []


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"{not json", "not JSON (Expecting property name enclosed in double quotes, line 1)"),
        (b'{"format": 2, "entries": []}', "format"),
        (b'{"format": 1, "entries": [{"identity_slug": "Bad Slug", "source_image_id": "x", "reason": "r", '
         b'"added_at": "2026-11-23T18:00:00Z", "source": "auto"}]}', "identity_slug"),
        (b'{"format": 1, "entries": [{"identity_slug": "a", "source_image_id": "x", "reason": "r", '
         b'"added_at": "2026-11-23T18:00:00Z", "source": "robot"}]}', "source"),
        (b'{"format": 1, "entries": [], "extra": 1}', "extra"),
    ],
)  # fmt: skip
def test_malformed_file_names_the_path(location: Location, content: bytes, detail: str) -> None:
    exclusions = ExclusionList(location)
    location.write_bytes_atomic(exclusions.path, content)
    with pytest.raises(ManifestError, match="malformed exclusion list") as info:
        exclusions.load()
    assert location.display(exclusions.path) in str(info.value)
    assert detail in str(info.value)
    with pytest.raises(ManifestError):  # edits refuse too, and leave the file alone
        exclusions.add([entry("x1")])
    assert location.read_bytes(exclusions.path) == content


def test_duplicate_keys_are_malformed(location: Location) -> None:
    exclusions = ExclusionList(location)
    one = json.loads(entry("x1").model_dump_json())
    location.write_bytes_atomic(exclusions.path, json.dumps({"format": 1, "entries": [one, one]}).encode())
    with pytest.raises(ManifestError, match="duplicate"):
        exclusions.excluded("ada-lovelace")


def test_entry_validation() -> None:
    with pytest.raises(ValidationError):
        Exclusion(identity_slug="ada-lovelace", source_image_id="  ", reason="r")
    with pytest.raises(ValidationError):
        Exclusion(identity_slug="ada-lovelace", source_image_id="x", reason="r", added_at=datetime(2026, 1, 1))
    assert Exclusion(identity_slug="ada-lovelace", source_image_id="x", reason="r").source == "manual"


def _add_one_by_one(root: str, prefix: str, start: Barrier) -> None:
    exclusions = ExclusionList(Location.from_uri(root))
    start.wait()
    for n in range(15):
        exclusions.add([entry(f"{prefix}-{n}")])


def test_concurrent_adds_from_two_processes_are_serialised(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_add_one_by_one, args=(str(tmp_path), p, start)) for p in ("left", "right")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    excluded = ExclusionList(Location.from_uri(str(tmp_path))).excluded("ada-lovelace")
    assert excluded == {f"{side}-{n}" for side in ("left", "right") for n in range(15)}  # no lost update


def test_a_reviewers_decisions_name_them_and_undo_puts_the_list_back(location: Location) -> None:
    exclusions = ExclusionList(location)
    auto = Exclusion(identity_slug="ada", source_image_id="a" * 64, reason="wrong_person", source="auto")
    exclusions.add([auto])
    before = exclusions.load()
    # keep overrules the cleaner's exclusion: the reviewer and the entry it replaced are recorded
    [kept] = exclusions.keep("ada", ["a" * 64], by="reviewer")
    assert (kept.reason, kept.source, kept.added_by) == (REVIEWED_KEEP, "manual", "reviewer")
    assert kept.replaced == auto
    assert exclusions.excluded("ada") == set() and exclusions.reviewed_keep("ada") == {"a" * 64}
    # exclude a photo nobody had listed, then change their mind on it: exclude replaces a keep
    [out] = exclusions.exclude("ada", ["b" * 64], by="reviewer")
    assert out.replaced is None and exclusions.excluded("ada") == {"b" * 64}
    assert exclusions.keep("ada", ["b" * 64], by="other")[0].replaced == out.model_copy(update={"replaced": None})
    assert ExclusionList(location).load() == exclusions.load()  # it survives a reload (the file)
    # undo: b goes back to excluded by the reviewer, then to no entry; a goes back to the automatic entry
    assert exclusions.undo("ada", "b" * 64) == out
    assert exclusions.undo("ada", "b" * 64) is None
    assert exclusions.undo("ada", "a" * 64) == auto
    assert exclusions.load() == before
    with pytest.raises(NotFoundError, match="no manual decision"):
        exclusions.undo("ada", "a" * 64)  # the cleaner's own entry is not a decision to take back
    with pytest.raises(ValueError, match="keep"):
        exclusions.exclude("ada", ["c" * 64], reason=REVIEWED_KEEP)
    assert exclusions.load() == before
