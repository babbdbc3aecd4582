"""The scaled-out stack (`make cluster`) doing a night for real: Airflow's scheduler and Celery
workers, the Selenium Grid, the Ray cluster and the S3 endpoint, no `dags test`.

The stack must be up (``make cluster``; ``make test-cluster`` brings it up and runs this tier).
The nightly run is triggered through the REST API and followed to its end; the dataset Asset
it emits schedules the retraining, whose train and evaluate tasks run on the `gpu` queue's
worker; the model lands on S3 and `facescale identify` on the same root uses it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "scripts" / "cluster.sh"
NIGHT = "2026-11-30T00:00:00Z"  # a logical date of the test's own (the scheduler runs its own nights too)
RUN_TIMEOUT_S = 1800


def _cluster_env() -> dict[str, str]:
    out = subprocess.run([str(CLUSTER_SH), "env"], capture_output=True, text=True, check=True).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env


@dataclass
class Api:
    base: str
    session: requests.Session

    def get(self, path: str) -> Any:
        response = self.session.get(f"{self.base}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self.session.post(f"{self.base}{path}", json=body, timeout=30)

    def wait_run(self, dag: str, run_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            run = self.get(f"/api/v2/dags/{dag}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(5)
        raise AssertionError(f"{dag} {run_id} did not finish in {RUN_TIMEOUT_S} s")

    def tasks(self, dag: str, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]


@pytest.fixture(scope="session")
def env() -> dict[str, str]:
    status = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, text=True).stdout
    stopped = [line.split()[0] for line in status.splitlines() if "stopped" in line]
    if stopped:
        pytest.fail(f"the cluster is not up ({', '.join(stopped)} stopped): run `make cluster`")
    return _cluster_env()


@pytest.fixture(scope="session")
def api(env: dict[str, str]) -> Iterator[Api]:
    home = Path(env["AIRFLOW_HOME"])
    password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    base = f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}"
    token = requests.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=30)
    token.raise_for_status()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    yield Api(base, session)
    session.close()


def _facescale(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    script = Path(sys.executable).with_name("facescale")
    return subprocess.run([str(script), *args], env=full, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def night(api: Api) -> dict[str, Any]:
    """facescale_nightly for NIGHT, triggered through the REST API and run by the scheduler."""
    run_id = "cluster-test-20261130"
    response = api.post("/api/v2/dags/facescale_nightly/dagRuns", {"dag_run_id": run_id, "logical_date": NIGHT})
    assert response.status_code in (200, 409), response.text  # 409: an earlier session triggered it
    run = api.wait_run("facescale_nightly", run_id)
    return {"run": run, "tasks": api.tasks("facescale_nightly", run_id)}


def test_the_night_runs_on_celery_workers_and_publishes_to_s3(night: dict[str, Any], env: dict[str, str]) -> None:
    assert night["run"]["state"] == "success", [(t["task_id"], t["state"]) for t in night["tasks"]]
    scrapes = [t for t in night["tasks"] if t["task_id"] == "scrape"]
    assert len(scrapes) >= 2 and all(t["pool"] == "facescale_scrape" for t in scrapes)
    assert all(t["queue"] == "default" and t["hostname"] for t in night["tasks"] if t["state"] == "success")
    listed = _facescale(env, "datasets", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    versions = json.loads(listed.stdout)
    assert versions and versions[-1]["validation"]["success"]
    assert env["FACESCALE_STORAGE__ROOT"].startswith("s3://")
    runs = json.loads(_facescale(env, "runs", "list", "--json").stdout)
    assert {r["meta"]["engine"] for r in runs} == {"demo"}  # scraped through the Grid's browsers


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
    models = json.loads(_facescale(env, "models", "list", "--json").stdout)
    assert models, "no model registered on S3"
    photo = sorted((lfw_dev / "Tony_Blair").glob("*.jpg"))[0]
    identified = _facescale(env, "identify", str(photo), "--json")
    assert identified.returncode == 0, identified.stderr
    assert json.loads(identified.stdout)["results"][0]["faces"]
