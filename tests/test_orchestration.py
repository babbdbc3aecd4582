"""facescale.orchestration without Airflow: run keys, the nightly plan and the retraining decision (plain unit tier)."""

from __future__ import annotations

import hashlib
import json
import types
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from facescale.config import Settings
from facescale.orchestration import passed_bar, plan_night, retrain_decision, run_key
from facescale.storage import (
    DatasetStore,
    IdentityEntry,
    IdentityRegistry,
    Location,
    Manifest,
    ModelRegistry,
    RawStore,
    ShardInfo,
    make_slug,
)
from facescale.storage.plans import PLANS_DIR


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


# -- a 3-row world of manifests and models (retrain_decision and plan_night read only these) ---


def _version(root: Path, version_id: str, names: Sequence[str] = (), rows: int = 0, *, published: bool = True,
             waiting: Sequence[str] = ()) -> None:
    """Commit a manifest of ``rows`` rows over ``names`` (no shard files: the decision reads manifests only)."""
    location = Location.from_uri(str(root))
    store = DatasetStore(location)
    manifest = Manifest(
        version_id=version_id,
        identities=[IdentityEntry(name=n, slug=make_slug(n), label=i) for i, n in enumerate(names)],
        shards=[ShardInfo(path="shards/part-0.parquet", rows=rows, bytes=1, sha256="0" * 64)],
        published_at=datetime(2026, 11, 1, tzinfo=UTC) if published else None,
        notes={"curation": {"waiting": {make_slug(n): {} for n in waiting}}},
    )
    location.makedirs(store.version_dir(version_id))
    location.write_bytes_atomic(store.manifest_path(version_id), manifest.to_json())


def _model(root: Path, tmp_path: Path, model_id: str, version_id: str, top1: float) -> None:
    weights = tmp_path / f"{model_id}.keras"
    weights.write_bytes(model_id.encode())
    ModelRegistry(Location.from_uri(str(root))).register(
        tmp_path, [weights.name], version_id=version_id, num_classes=2, model_id=model_id,
        fingerprint=hashlib.sha256(weights.read_bytes()).hexdigest(), metrics={"evaluation": {"top1": top1}},
    )


def test_retrain_decision_trains_on_growth_and_skips_what_the_model_has_seen(tmp_path: Path) -> None:
    root = tmp_path / "data"
    settings = _settings(root, min_test_top1=0.5, retrain_min_new_identities=1, retrain_min_new_samples=0.2)

    def decide(version: str | None = None, force: bool = False) -> Any:
        return retrain_decision(settings, version, force=force)

    none = decide()
    assert (none.train, none.version_id, none.reason) == (False, None, "no published dataset version yet")

    _version(root, "v1", ["Ada Lovelace", "Alan Turing"], rows=100)
    first = decide()  # the newest published version; no model yet
    assert (first.train, first.version_id, first.base_model) == (True, "v1", None)
    assert first.reason == "no model has passed the quality bar yet"
    _model(root, tmp_path, "m-below", "v1", top1=0.1)  # below the bar: never a base
    assert decide("v1").train and decide("v1").base_model is None

    _model(root, tmp_path, "m-1", "v1", top1=0.9)
    seen = decide("v1")
    assert (seen.train, seen.base_model, seen.base_version) == (False, "m-1", "v1")
    assert seen.reason == "model m-1 was trained on v1 already"
    forced = decide("v1", force=True)
    assert (forced.train, forced.reason, forced.new_identities, forced.new_samples) == (True, "forced", [], 0.0)

    _version(root, "v2", ["Ada Lovelace", "Alan Turing", "Grace Hopper"], rows=105)  # +1 identity, +5 %
    grown = decide("v2")
    assert (grown.train, grown.reason, grown.new_identities) == (True, "1 new identities", ["grace-hopper"])
    assert grown.base_model == "m-1" and grown.new_samples == pytest.approx(0.05)

    _version(root, "v3", ["Ada Lovelace", "Alan Turing"], rows=125)  # same people, +25 % samples
    more = decide("v3")
    assert (more.train, more.reason, more.new_identities) == (True, "25% more samples", [])

    _version(root, "v4", ["Ada Lovelace", "Alan Turing"], rows=110)  # same people, +10 %: below both
    little = decide("v4")
    assert not little.train and little.new_samples == pytest.approx(0.1)
    assert little.reason.endswith("below the retraining thresholds") and "than v1 (model m-1)" in little.reason
    assert decide("v4", force=True).reason == "forced"

    _version(root, "v5", ["Ada Lovelace", "Alan Turing", "Grace Hopper"], rows=500, published=False)
    unpublished = decide("v5")
    assert not unpublished.train and "not published" in unpublished.reason


def test_the_quality_bar_weighs_the_model_what_is_served_and_a_warm_start(tmp_path: Path) -> None:
    orch = _settings(tmp_path, min_test_top1=0.5, min_served_right=0.9).orchestration

    def record(**metrics: object) -> Any:
        return types.SimpleNamespace(metrics=metrics)

    good = {"evaluation": {"top1": 0.6}, "serving_test": {"backend": "dlib", "answered_right": 0.95}}
    assert passed_bar(record(**good), orch)
    assert not passed_bar(record(), orch)  # never evaluated
    assert not passed_bar(record(**good | {"evaluation": {"top1": 0.4}}), orch)
    assert not passed_bar(record(**good | {"serving_test": {"backend": "dlib", "answered_right": 0.85}}), orch)
    assert passed_bar(record(evaluation={"top1": 0.6}), orch)  # evaluated before serving was measured
    worse = {"at_least_as_good": False, "previous_accuracy": 0.8, "new_accuracy": 0.7}
    assert not passed_bar(record(**good | {"warm_start": worse}), orch)
    assert passed_bar(record(**good | {"warm_start": worse | {"at_least_as_good": None}}), orch)  # no samples


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
