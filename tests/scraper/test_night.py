"""The night's plan (`scraper.night.plan_night`, through the DAG task `orchestration.plan_night`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facescale.app.orchestration import plan_night
from facescale.storage import IdentityRegistry, Location, RawStore
from facescale.storage.plans import PLANS_DIR

from ..helpers import commit_manifest as _version
from ..helpers import store_settings as _settings


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


def test_waiting_identities_are_searched_again_up_to_the_cap(tmp_path: Path) -> None:
    root = tmp_path / "data"
    location = Location.from_uri(str(root))
    registered = IdentityRegistry(location).add(["Ada Lovelace", "Alan Turing"])
    with RawStore(location).open("nightly-20261031-b00") as writer:  # both scraped once, both still short
        writer.commit([i.slug for i, _ in registered], finished=True)
    _version(root, "v1", ["Ada Lovelace"], rows=10, waiting=["Alan Turing", "Ada Lovelace"])
    capped = _settings(root, max_waiting_nights=2, batch_size=5)

    nights = [plan_night(capped, f"2026110{day}", per_keyword=4) for day in (1, 2, 3)]
    assert [(p.waiting, p.given_up) for p in nights] == [
        (["Ada Lovelace", "Alan Turing"], []),
        (["Ada Lovelace", "Alan Turing"], []),
        ([], ["Ada Lovelace", "Alan Turing"]),  # searched on two other nights already
    ]
    assert [p.waiting_nights for p in nights] == [
        {"Ada Lovelace": 0, "Alan Turing": 0}, {"Ada Lovelace": 1, "Alan Turing": 1},
        {"Ada Lovelace": 2, "Alan Turing": 2},
    ]
    assert [(b.names, b.per_keyword) for b in nights[1].batches] == [(["Ada Lovelace", "Alan Turing"], 8)]
    assert nights[2].batches == []
    stored = json.loads((root / PLANS_DIR / "nightly-20261103.json").read_text())  # the decision is visible
    assert stored["given_up"] == ["Ada Lovelace", "Alan Turing"] and stored["max_waiting_nights"] == 2
    assert stored["waiting_nights"] == {"Ada Lovelace": 2, "Alan Turing": 2}

    # a rerun of a night returns its plan, whatever the cap or the other nights say now
    assert plan_night(_settings(root, max_waiting_nights=None), "20261102") == nights[1]
    assert plan_night(capped, "20261103") == nights[2]
    # no cap: searched again (a night that gave up on them does not count as a search)
    uncapped = plan_night(_settings(root, max_waiting_nights=None), "20261104")
    assert uncapped.waiting == ["Ada Lovelace", "Alan Turing"] and uncapped.given_up == []
    assert uncapped.waiting_nights == {"Ada Lovelace": 2, "Alan Turing": 2}
    assert plan_night(_settings(root, max_waiting_nights=0), "20261105").given_up == ["Ada Lovelace", "Alan Turing"]


def test_waiting_identities_whose_last_search_had_every_result_are_not_searched_deeper(tmp_path: Path) -> None:
    root = tmp_path / "data"
    location = Location.from_uri(str(root))
    (ada, _), (alan, _) = IdentityRegistry(location).add(["Ada Lovelace", "Alan Turing"])
    raw = RawStore(location)
    with raw.open("nightly-20261031-b00") as writer:  # the engine listed fewer results than asked for Ada
        writer.commit([ada.slug, alan.slug], finished=True, meta={"exhausted": [ada.slug]})
    _version(root, "v1", [], waiting=["Ada Lovelace", "Alan Turing"])
    settings = _settings(root, batch_size=5)

    plan = plan_night(settings, "20261101", per_keyword=4)
    assert plan.exhausted == ["Ada Lovelace"] and plan.waiting == ["Alan Turing"]
    assert [b.names for b in plan.batches] == [["Alan Turing"]]

    # a later search of Ada that was not cut short (the engine found more): she is searched again
    with raw.open("nightly-20261101-b00") as writer:
        writer.commit([ada.slug], finished=True, meta={"exhausted": []})
    again = plan_night(settings, "20261102", per_keyword=4)
    assert again.exhausted == [] and again.waiting == ["Ada Lovelace", "Alan Turing"]


def test_an_erased_person_is_never_planned_again_unless_added_by_hand(tmp_path: Path) -> None:
    """The keywords file still lists her: the night leaves her out (counted, never named); a hand-made plan
    (the add-identities DAG) takes her as a new identity."""
    from facescale.storage import StorageRoot
    from facescale.storage.erasure import erase, identity_target

    keywords = tmp_path / "names.txt"
    keywords.write_text("Ada Lovelace\nAlan Turing\n")
    root = tmp_path / "data"
    storage = StorageRoot.from_uri(str(root))
    storage.registry.add(["Ada Lovelace"])
    target, identity = identity_target(storage, "Ada Lovelace")
    erase(storage, target, requested_by="test", reason="takedown", identity=identity)

    plan = plan_night(_settings(root, keywords, new_per_night=5), "20261130")
    assert plan.new == ["Alan Turing"] and plan.erased == 1
    assert "Ada" not in (root / PLANS_DIR / "nightly-20261130.json").read_text()
    by_hand = plan_night(_settings(root), "run-2", prefix="manual", names=["Ada Lovelace"])
    assert by_hand.new == ["Ada Lovelace"]
    assert storage.registry.get("Ada Lovelace").label == 2  # a new identity: her old label 0 stays reserved
