"""The retraining decision and the quality bar (`training.decision`, through the DAG task
`orchestration.retrain_decision`)."""

from __future__ import annotations

import hashlib
import types
from pathlib import Path
from typing import Any

import pytest

from facescale.app.orchestration import retrain_decision
from facescale.storage import Location, ModelRegistry
from facescale.training.decision import passed_bar

from ..helpers import commit_manifest as _version
from ..helpers import store_settings as _settings


def _model(root: Path, tmp_path: Path, model_id: str, version_id: str, top1: float,
           notes: dict[str, Any] | None = None) -> None:
    weights = tmp_path / f"{model_id}.keras"
    weights.write_bytes(model_id.encode())
    ModelRegistry(Location.from_uri(str(root))).register(
        tmp_path, [weights.name], version_id=version_id, num_classes=2, model_id=model_id,
        fingerprint=hashlib.sha256(weights.read_bytes()).hexdigest(), metrics={"evaluation": {"top1": top1}},
        notes=notes,
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


def test_a_model_an_erasure_marked_is_retrained_from_scratch(tmp_path: Path) -> None:
    """Data a model learned from was erased (`storage.erasure` marks it): the same version, rewritten in place,
    is trained again, and never from that model's weights."""
    root = tmp_path / "data"
    settings = _settings(root, min_test_top1=0.5)
    _version(root, "v1", ["Ada Lovelace", "Alan Turing"], rows=100)
    _model(root, tmp_path, "m-1", "v1", top1=0.9, notes={"retrain": True, "erasures": ["erasure-1"]})
    decision = retrain_decision(settings, "v1")
    assert (decision.train, decision.base_model) == (True, None)
    assert decision.reason == "model m-1 learned from data erasure-1 removed: retrain from scratch"
