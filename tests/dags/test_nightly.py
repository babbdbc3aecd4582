"""facescale_nightly and facescale_retrain end to end with ``dag.test()`` against the demo web.

Two nights on a tiny configuration: each adds two identities (mapped scrape tasks, one RAW
run per batch, keyed by the logical date), curates on Ray, validates and publishes the dataset
Asset. The second night leaves the first night's data untouched, and a rerun of a night
changes nothing. Retraining (slow tier) trains on the Asset event once and then skips.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from facescale.storage.listing import INDEX_FILE
from facescale.storage.raw import VERDICTS_INDEX
from facescale.storage.versions import GROWTH_INDEX

pytestmark = [pytest.mark.airflow, pytest.mark.ray, pytest.mark.browser]

NIGHT1, NIGHT2 = "2026-11-01T00:00:00+00:00", "2026-11-02T00:00:00+00:00"


def _snapshot(root: Path, *parts: str) -> dict[str, str]:
    """Every stored file's sha256, but the listing indexes (derived caches a later listing rewrites)."""
    files = {}
    for part in parts:
        for path in sorted((root / part).rglob("*")):
            if path.is_file() and path.name not in (INDEX_FILE, GROWTH_INDEX, VERDICTS_INDEX):
                files[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def _manifest(root: Path, version: str) -> dict[str, Any]:
    return json.loads((root / "datasets" / version / "manifest.json").read_text())


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory, airflow_tools: Any, demo_web_url: str) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("airflow")
    keywords = home / "keywords.txt"
    keywords.write_text("\n".join(airflow_tools.PEOPLE[:4]) + "\n")
    airflow = airflow_tools.make_airflow(
        home, orchestration__keywords_file=str(keywords), orchestration__new_per_night="2"
    )
    conf = {"base_url": demo_web_url, "images_per_keyword": 12, "batch_size": 1}
    first = airflow.test_dag("facescale_nightly", NIGHT1, conf)
    after_first = _snapshot(airflow.root, "raw", "datasets", "registry")
    second = airflow.test_dag("facescale_nightly", NIGHT2, conf)
    after_second = _snapshot(airflow.root, "raw", "datasets")
    again = airflow.test_dag("facescale_nightly", NIGHT2, conf)
    return {
        "airflow": airflow, "first": first, "second": second, "again": again, "after_first": after_first,
        "after_second": after_second, "after_again": _snapshot(airflow.root, "raw", "datasets"),
    }


def test_first_night_scrapes_curates_validates_and_publishes(nights: dict[str, Any]) -> None:
    first, root = nights["first"], nights["airflow"].root
    assert first["state"] == "success", first["log"]
    assert first["tasks"] == {
        "plan": "success", "scrape[0]": "success", "scrape[1]": "success", "curate": "success",
        "created": "success", "validate": "success", "publish": "success",
    }
    raw_runs = {Path(k).parts[1] for k in nights["after_first"] if k.startswith("raw/")}
    assert raw_runs == {"nightly-20261101-b00", "nightly-20261101-b01"}
    manifest = _manifest(root, "nightly-20261101")
    assert manifest["published_at"] and manifest["validation"]["success"]
    assert [i["name"] for i in manifest["identities"]] == ["Colin Powell", "Tony Blair"]
    (event,) = first["events"]
    assert event["asset"] == "facescale_dataset" and event["dag_id"] == "facescale_nightly"
    assert event["extra"]["version_id"] == "nightly-20261101"
    assert event["extra"]["new_identities"] == ["colin-powell", "tony-blair"]
    assert event["extra"]["rows"] == manifest_rows(manifest)
    # the scheduler's queue: the event schedules the retraining DAG
    assert first["queued"] == ["facescale_retrain"]


def manifest_rows(manifest: dict[str, Any]) -> int:
    return sum(s["rows"] for s in manifest["shards"])


def test_second_night_adds_identities_without_touching_the_first(nights: dict[str, Any]) -> None:
    second, root = nights["second"], nights["airflow"].root
    assert second["state"] == "success", second["log"]
    assert second["xcom"]["plan"] == [
        {"run_id": "nightly-20261102-b00", "names": ["Donald Rumsfeld"], "per_keyword": 12},
        {"run_id": "nightly-20261102-b01", "names": ["George W Bush"], "per_keyword": 12},
    ]
    first_files = {k: v for k, v in nights["after_second"].items() if not k.startswith(("raw/nightly-20261102",
                                                                                       "datasets/nightly-20261102"))}
    assert first_files == {k: v for k, v in nights["after_first"].items() if not k.startswith("registry/")}
    manifest = _manifest(root, "nightly-20261102")
    assert manifest["parent"] == "nightly-20261101" and manifest["published_at"]
    labels = {i["name"]: i["label"] for i in manifest["identities"]}
    assert labels == {"Colin Powell": 0, "Tony Blair": 1, "Donald Rumsfeld": 2, "George W Bush": 3}
    reused = manifest["notes"]["curation"]["identities"]
    assert reused["colin-powell"]["reused"] and reused["tony-blair"]["reused"]
    event = second["events"][-1]
    assert event["extra"]["version_id"] == "nightly-20261102"
    assert event["extra"]["parent"] == "nightly-20261101"
    assert event["extra"]["new_identities"] == ["donald-rumsfeld", "george-w-bush"]


def test_rerunning_a_night_changes_nothing(nights: dict[str, Any]) -> None:
    again = nights["again"]
    assert again["state"] == "success", again["log"]
    assert again["xcom"]["plan"] == nights["second"]["xcom"]["plan"]
    assert again["xcom"]["curate"]["version_id"] == "nightly-20261102"
    assert again["xcom"]["curate"]["prepared_rows"] == 0
    assert nights["after_again"] == nights["after_second"]


@pytest.fixture(scope="module")
def added(nights: dict[str, Any], demo_web_url: str) -> dict[str, Any]:
    conf = {"names": ["Vladimir Putin"], "base_url": demo_web_url, "images_per_keyword": 12}
    return nights["airflow"].test_dag("facescale_add_identities", None, conf)


def test_adding_identities_by_hand_publishes_a_version_for_retraining(
    nights: dict[str, Any], added: dict[str, Any]
) -> None:
    root = nights["airflow"].root
    assert added["state"] == "success", added["log"]
    assert added["tasks"] == {
        "register": "success", "plan": "success", "scrape[0]": "success", "curate": "success",
        "created": "success", "validate": "success", "publish": "success",
    }
    (batch,) = added["xcom"]["plan"]
    assert batch["names"] == ["Vladimir Putin"] and batch["run_id"].startswith("manual-")
    version = added["xcom"]["curate"]["version_id"]
    assert version.startswith("manual-")
    manifest = _manifest(root, version)
    assert manifest["parent"] == "nightly-20261102"
    assert {i["name"]: i["label"] for i in manifest["identities"]}["Vladimir Putin"] == 4
    event = added["events"][-1]
    assert event["dag_id"] == "facescale_add_identities"
    assert event["extra"]["new_identities"] == ["vladimir-putin"]
    assert added["queued"] == ["facescale_retrain"]


@pytest.mark.slow
def test_retrain_trains_on_the_asset_event_then_skips_when_nothing_changed(nights: dict[str, Any]) -> None:
    airflow = nights["airflow"]
    trained = airflow.test_dag("facescale_retrain", None, {})
    assert trained["state"] == "success", trained["log"]
    assert trained["tasks"] == {
        "decide": "success", "train": "success", "evaluate": "success", "quality_bar": "success", "publish": "success",
    }
    latest = [e for e in trained["events"] if e["asset"] == "facescale_dataset"][-1]["extra"]
    decision = trained["xcom"]["decide"]
    assert decision["version_id"] == latest["version_id"] and decision["train"]
    model = trained["xcom"]["publish"]
    assert model["version_id"] == latest["version_id"] and model["classes"] == latest["identities"]
    record = json.loads((airflow.root / "models" / model["model_id"] / "model.json").read_text())
    assert record["metrics"]["evaluation"]["top1"] == model["top1"]
    # the train task registered it with its calibration; evaluate measured what its default backend answers
    default = record["metrics"]["calibration"]["default_backend"]
    evaluated = trained["xcom"]["evaluate"]
    assert record["metrics"]["serving_test"]["backend"] == evaluated["served_backend"] == default
    assert record["metrics"]["serving_test"]["answered_right"] == evaluated["served_right"]
    assert [e["asset"] for e in trained["events"]][-1] == "facescale_model"

    skipped = airflow.test_dag("facescale_retrain", None, {})
    assert skipped["state"] == "success", skipped["log"]
    assert skipped["tasks"]["decide"] == "success"
    assert {skipped["tasks"][t] for t in ("train", "evaluate", "quality_bar", "publish")} == {"skipped"}
    assert sorted(p.name for p in (airflow.root / "models").iterdir()) == [model["model_id"]]
