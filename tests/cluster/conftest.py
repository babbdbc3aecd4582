"""Fixtures of the cluster tier: the running stack's environment, its REST API, the CLI on its
root (or another root on the same S3 endpoint), the tier's undisturbed night and the reads the
fault tests compare."""

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

from .stack import airflow_session

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

    def trigger(self, dag: str, run_id: str, conf: dict[str, Any]) -> None:
        response = self.post(f"/api/v2/dags/{dag}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf})
        assert response.status_code == 200, response.text

    def wait_running(self, dag: str, run_id: str, task_id: str, timeout_s: float = 600) -> None:
        """Until an instance of ``task_id`` runs on a worker."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(t["task_id"] == task_id and t["state"] == "running" for t in self.tasks(dag, run_id)):
                return
            time.sleep(1)
        raise AssertionError(f"no {task_id} task of {dag} {run_id} started in {timeout_s} s")


@pytest.fixture(scope="session")
def env() -> dict[str, str]:
    status = subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, text=True).stdout
    stopped = [line.split()[0] for line in status.splitlines() if "stopped" in line]
    if stopped:
        pytest.fail(f"the cluster is not up ({', '.join(stopped)} stopped): run `make cluster`")
    return _cluster_env()


@pytest.fixture(scope="session")
def api(env: dict[str, str]) -> Iterator[Api]:
    base, session = airflow_session(env)
    yield Api(base, session)
    session.close()


def facescale(env: dict[str, str], *args: str, root: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI on the stack's storage root (or ``root``, another prefix on the same S3 endpoint)."""
    full = {**os.environ, **env, **({"FACESCALE_STORAGE__ROOT": root} if root else {})}
    script = Path(sys.executable).with_name("facescale")
    return subprocess.run([str(script), *args], env=full, capture_output=True, text=True, timeout=900)


def cluster_sh(*args: str) -> None:
    """scripts/cluster.sh ARGS (e.g. ``start-role airflow``: start the roles of a group that are not running)."""
    done = subprocess.run([str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def _read(env: dict[str, str], code: str, root: str | None) -> Any:
    full = {**os.environ, **env, **({"FACESCALE_STORAGE__ROOT": root} if root else {})}
    preamble = (
        "import json, hashlib\n"
        "from facescale.config import load_settings\n"
        "from facescale.storage import DatasetStore, Location, RawStore, read_table\n"
        "s = load_settings().storage\n"
        "location = Location.from_uri(s.root, s.storage_options)\n"
    )
    out = subprocess.run([sys.executable, "-c", preamble + code], env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


RAW_KEYS = ("run_id", "identity", "rank", "source_url", "image_id", "error")


def raw_rows(env: dict[str, str], *, root: str | None = None) -> list[dict[str, Any]]:
    """Every RAW row of a store (without the image bytes)."""
    return _read(
        env,
        (
            "raw = RawStore(location)\n"
            f"t = read_table(location, raw.shard_paths(raw.run_ids()), {list(RAW_KEYS)!r})\n"
            "print(json.dumps(t.to_pylist()))\n"
        ),
        root,
    )


def version_samples(env: dict[str, str], version_id: str | None = None, *, root: str | None = None) -> dict[str, Any]:
    """A version (the latest published by default): its id and {identity: {sample_id: sha256 of the image}}."""
    return _read(
        env,
        (
            "store = DatasetStore(location)\n"
            f"m = store.get({version_id!r}) if {version_id!r} else store.latest()\n"
            "t = read_table(location, store.shard_paths(m), ['identity', 'sample_id', 'image'])\n"
            "out = {}\n"
            "for who, sid, img in zip(*(t.column(c).to_pylist() for c in ('identity', 'sample_id', 'image'))):\n"
            "    assert sid not in out.setdefault(who, {}), f'sample {sid} twice'\n"
            "    out[who][sid] = hashlib.sha256(img).hexdigest()\n"
            "print(json.dumps({'version_id': m.version_id, 'samples': out}))\n"
        ),
        root,
    )


NIGHT = "2026-11-30T00:00:00Z"  # a logical date of the tier's own for the night it triggers
NIGHT_RUN_ID = "cluster-test-20261130"


@pytest.fixture(scope="session")
def night(api: Api) -> dict[str, Any]:
    """The stack's first night: the run the scheduler starts by itself (``@daily``, catchup off)
    once the DAG processor has parsed the DAG. The tier's other runs use the store it leaves."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            runs = api.get("/api/v2/dags/facescale_nightly/dagRuns?order_by=logical_date&limit=100")["dag_runs"]
        except requests.HTTPError as error:  # 404 until the DAG processor has parsed the DAG file
            if error.response is None or error.response.status_code != 404:
                raise
            runs = []
        scheduled = [r for r in runs if r["run_type"] == "scheduled"]
        if scheduled:
            run = api.wait_run("facescale_nightly", scheduled[0]["dag_run_id"])
            return {"run": run, "tasks": api.tasks("facescale_nightly", run["dag_run_id"])}
        time.sleep(5)
    raise AssertionError("the scheduler started no facescale_nightly run in 600 s")
