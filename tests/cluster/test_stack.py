"""The scaled-out stack (`make cluster`) doing nights for real: Airflow's scheduler and Celery
workers, the Selenium Grid, the Ray cluster and the S3 endpoint, no `dags test`.

The stack must be up and fresh (``make test-cluster`` brings a fresh one up and runs this tier).
The first night is the scheduler's own (``@daily``); it is followed to its end through the REST
API; the dataset Asset it emits schedules the retraining, whose train and evaluate tasks run on
the `gpu` queue's worker; the model lands on S3 and `facescale identify` on the same root uses
it. A second night, triggered through the REST API, finds nothing new and publishes nothing.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from .conftest import NIGHT, NIGHT_RUN_ID, RUN_TIMEOUT_S, Api, facescale

pytestmark = pytest.mark.cluster


def test_the_night_runs_on_celery_workers_and_publishes_to_s3(night: dict[str, Any], env: dict[str, str]) -> None:
    assert night["run"]["state"] == "success", [(t["task_id"], t["state"]) for t in night["tasks"]]
    scrapes = [t for t in night["tasks"] if t["task_id"] == "scrape"]
    assert len(scrapes) >= 2 and all(t["pool"] == "facescale_scrape" for t in scrapes)
    assert all(t["queue"] == "default" and t["hostname"] for t in night["tasks"] if t["state"] == "success")
    listed = facescale(env, "datasets", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    versions = json.loads(listed.stdout)
    assert versions and versions[-1]["validation"]["success"]
    assert env["FACESCALE_STORAGE__ROOT"].startswith("s3://")
    runs = json.loads(facescale(env, "runs", "list", "--json").stdout)
    assert {r["meta"]["engine"] for r in runs} == {"demo"}  # scraped through the Grid's browsers


def test_the_review_view_shows_the_nights_version_from_s3(night: dict[str, Any], api: Api, env: dict[str, str]) -> None:
    """The plugin on the stack's api-server reads the S3 store: the run's tab, growth, an identity and its photos."""
    version = json.loads(facescale(env, "datasets", "list", "--json").stdout)[-1]["version_id"]
    tab = api.session.get(f"{api.base}/facescale/runs/facescale_nightly/{night['run']['dag_run_id']}",
                          allow_redirects=False, timeout=30)
    assert tab.status_code == 303 and tab.headers["location"].endswith(f"/facescale/versions/{version}"), tab.text
    assert version in api.session.get(f"{api.base}/facescale/growth", timeout=60).text
    page = api.session.get(f"{api.base}/facescale/versions/{version}", timeout=60)
    assert page.status_code == 200 and "passed" in page.text
    slug = re.search(r'/facescale/identities/([a-z0-9-]+)"', page.text)
    assert slug is not None, page.text[:2000]
    identity = api.session.get(f"{api.base}/facescale/identities/{slug.group(1)}", timeout=60)
    photo = re.search(r'src="(/facescale/photos/[^"]+\.jpg)"', identity.text)
    assert identity.status_code == 200 and photo is not None, identity.text[:2000]
    crop = api.session.get(f"{api.base}{photo.group(1)}", timeout=60)
    assert crop.status_code == 200 and crop.content[:2] == b"\xff\xd8"  # a JPEG crop from the crop cache on S3
    assert requests.get(f"{api.base}{photo.group(1)}", timeout=30).status_code == 401  # not without a login
    assert requests.post(f"{api.base}/facescale/api/keep", json={"identity_slug": slug.group(1), "image_id": "x"},
                         timeout=30).status_code == 401


def test_a_night_triggered_through_the_rest_api_with_nothing_new_publishes_nothing(
    night: dict[str, Any], api: Api, env: dict[str, str]
) -> None:
    before = json.loads(facescale(env, "datasets", "list", "--json").stdout)
    response = api.post("/api/v2/dags/facescale_nightly/dagRuns", {"dag_run_id": NIGHT_RUN_ID, "logical_date": NIGHT})
    assert response.status_code == 200, response.text
    finished = api.wait_run("facescale_nightly", NIGHT_RUN_ID)
    tasks = {t["task_id"]: t for t in api.tasks("facescale_nightly", NIGHT_RUN_ID)}
    assert finished["state"] == "success", {k: t["state"] for k, t in tasks.items()}
    assert tasks["curate"]["state"] == "success" and tasks["publish"]["state"] == "skipped"
    after = json.loads(facescale(env, "datasets", "list", "--json").stdout)
    assert [v["version_id"] for v in after] == [v["version_id"] for v in before]


def test_the_dataset_asset_schedules_retraining_on_the_gpu_queue(
    night: dict[str, Any], api: Api, env: dict[str, str], lfw_dev: Path
) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    retrain = None
    while retrain is None and time.monotonic() < deadline:
        runs = api.get("/api/v2/dags/facescale_retrain/dagRuns?order_by=-start_date&limit=5")["dag_runs"]
        retrain = next((r for r in runs if r["run_type"] == "asset_triggered"), None)
        time.sleep(5)
    assert retrain is not None, "no asset-triggered retraining run"
    finished = api.wait_run("facescale_retrain", retrain["dag_run_id"])
    tasks = {t["task_id"]: t for t in api.tasks("facescale_retrain", retrain["dag_run_id"])}
    assert finished["state"] == "success", {k: t["state"] for k, t in tasks.items()}
    for name in ("train", "evaluate"):
        if tasks[name]["state"] == "success":
            assert tasks[name]["queue"] == "gpu"
    models = json.loads(facescale(env, "models", "list", "--json").stdout)
    assert models, "no model registered on S3"
    photo = sorted((lfw_dev / "Tony_Blair").glob("*.jpg"))[0]
    identified = facescale(env, "identify", str(photo), "--json")
    assert identified.returncode == 0, identified.stderr
    assert json.loads(identified.stdout)["results"][0]["faces"]
