"""Fixtures of the cluster tier: the running stack's environment, its REST API and the CLI on its root."""

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

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "scripts" / "cluster.sh"
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


def facescale(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env}
    script = Path(sys.executable).with_name("facescale")
    return subprocess.run([str(script), *args], env=full, capture_output=True, text=True, timeout=600)


