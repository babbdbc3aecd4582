"""facescale.orchestration without Airflow: run keys and the nightly plan (plain unit tier)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from facescale.config import Settings
from facescale.orchestration import PLANS_DIR, plan_night, run_key
from facescale.storage import IdentityRegistry, Location, RawStore


def _settings(root: Path, keywords: Path | None = None, **orchestration: object) -> Settings:
    orch = {"keywords_file": str(keywords) if keywords else None, **orchestration}
    return Settings(storage={"root": str(root)}, orchestration=orch)


def test_run_key_from_the_logical_date_or_the_run_id() -> None:
    assert run_key(datetime(2026, 11, 30, 0, 0, tzinfo=UTC), "scheduled__2026-11-30T00:00:00+00:00") == "20261130"
    key = run_key(None, "manual__2026-11-30T09:02:14.300030+00:00")
    assert key == "2026-11-30T09-02-14.300030-00-00"
    assert run_key(None, "manual__2026-11-30T09:02:14.300030+00:00") == key  # stable for a run
    assert run_key(None, "my run/1") == "my-run-1"


def test_plan_takes_the_next_new_names_in_batches_and_is_kept(tmp_path: Path) -> None:
    keywords = tmp_path / "names.txt"
    keywords.write_text("# people\nAda Lovelace\nAlan Turing\nGrace Hopper\nEdsger Dijkstra\n")
    root = tmp_path / "data"
    IdentityRegistry(Location.from_uri(str(root))).add(["Alan Turing"])  # registered, never scraped
    settings = _settings(root, keywords, new_per_night=2, batch_size=2)

    plan = plan_night(settings, "20261130", per_keyword=7)
    assert plan.new == ["Ada Lovelace", "Grace Hopper"]
    assert plan.pending == ["Alan Turing"]
    assert [(b.run_id, b.names, b.per_keyword) for b in plan.batches] == [
        ("nightly-20261130-b00", ["Ada Lovelace", "Grace Hopper"], 7),
        ("nightly-20261130-b01", ["Alan Turing"], 7),
    ]
    labels = IdentityRegistry(Location.from_uri(str(root))).labels()
    assert labels == {"alan-turing": 0, "ada-lovelace": 1, "grace-hopper": 2}  # in plan order
    stored = json.loads((root / PLANS_DIR / "nightly-20261130.json").read_text())
    assert stored["batches"][1]["names"] == ["Alan Turing"]

    # a rerun of the night returns the stored plan, whatever changed since
    IdentityRegistry(Location.from_uri(str(root))).add(["Ada Lovelace", "Grace Hopper"])
    again = plan_night(_settings(root, keywords, new_per_night=5, batch_size=1), "20261130")
    assert again == plan


def test_completed_identities_are_not_planned_again(tmp_path: Path) -> None:
    keywords = tmp_path / "names.txt"
    keywords.write_text("Ada Lovelace\nAlan Turing\n")
    root = tmp_path / "data"
    location = Location.from_uri(str(root))
    (ada, _), = IdentityRegistry(location).add(["Ada Lovelace"])
    with RawStore(location).open("nightly-20261129-b00") as writer:
        writer.commit([ada.slug], finished=True)
    plan = plan_night(_settings(root, keywords, new_per_night=5), "20261130")
    assert plan.new == ["Alan Turing"] and plan.pending == [] and plan.waiting == []
    assert [b.names for b in plan.batches] == [["Alan Turing"]]


def test_names_given_by_hand_are_planned_under_their_own_prefix(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data")
    plan = plan_night(settings, "run-1", prefix="manual", names=["Ada Lovelace", "ada lovelace", "Alan Turing"],
                      batch_size=1, per_keyword=3)
    assert [(b.run_id, b.names) for b in plan.batches] == [
        ("manual-run-1-b00", ["Ada Lovelace"]), ("manual-run-1-b01", ["Alan Turing"])]


def test_an_empty_night_has_no_batches(tmp_path: Path) -> None:
    assert plan_night(_settings(tmp_path / "data"), "20261130").batches == []


@pytest.mark.parametrize("new_per_night", [0])
def test_no_new_identities_when_the_night_takes_none(tmp_path: Path, new_per_night: int) -> None:
    keywords = tmp_path / "names.txt"
    keywords.write_text("Ada Lovelace\n")
    plan = plan_night(_settings(tmp_path / "data", keywords), "20261130", new_per_night=new_per_night)
    assert plan.new == [] and plan.batches == []
