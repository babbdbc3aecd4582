"""Faults on the running stack (`make cluster`): the night still converges, nothing lost or duplicated.

Each fault hits a real process of the stack by its pid file (scripts/cluster.sh), mid-run,
and the role is started again the way an operator would (`scripts/cluster.sh start-role`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .conftest import CLUSTER_SH, Api, facescale

pytestmark = pytest.mark.cluster


def _pid(env: dict[str, str], role: str) -> int:
    cluster = Path(env["AIRFLOW_HOME"]).parent
    return int((cluster / "pids" / f"{role}.pid").read_text())


def _raw_rows(env: dict[str, str], run_prefix: str) -> list[dict[str, Any]]:
    code = (
        "import json, sys\n"
        "from facescale.config import load_settings\n"
        "from facescale.storage import Location, RawStore, read_table\n"
        "s = load_settings().storage\n"
        "raw = RawStore(Location.from_uri(s.root, s.storage_options))\n"
        f"ids = [r for r in raw.run_ids() if r.startswith({run_prefix!r})]\n"
        "t = read_table(raw.location, raw.shard_paths(ids), ['run_id', 'identity', 'rank', 'image_id', 'error'])\n"
        "print(json.dumps(t.to_pylist()))\n"
    )
    out = subprocess.run(["python", "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_a_celery_worker_killed_mid_scrape_is_retried_and_the_raw_run_resumes(
    api: Api, env: dict[str, str]
) -> None:
    names = ["Tim Henman", "Nicole Kidman", "Julianne Moore", "Carlos Moya"]
    run_id = f"cluster-fault-worker-{int(time.time())}"
    response = api.post(
        "/api/v2/dags/facescale_add_identities/dagRuns",
        {"dag_run_id": run_id, "logical_date": None, "conf": {"names": names, "batch_size": 2}},
    )
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # until a scrape task is on the worker
        scrapes = [t for t in api.tasks("facescale_add_identities", run_id) if t["task_id"] == "scrape"]
        if any(t["state"] == "running" for t in scrapes):
            break
        time.sleep(1)
    else:
        raise AssertionError("no scrape task started")
    time.sleep(5)  # into its browsers and downloads
    os.killpg(_pid(env, "airflow-worker-default"), signal.SIGKILL)
    subprocess.run([str(CLUSTER_SH), "start-role", "airflow"], check=True, capture_output=True, timeout=300)
    finished = api.wait_run("facescale_add_identities", run_id)
    tasks = api.tasks("facescale_add_identities", run_id)
    assert finished["state"] == "success", [(t["task_id"], t["map_index"], t["state"]) for t in tasks]
    assert max(t["try_number"] for t in tasks if t["task_id"] == "scrape") >= 2  # the killed one ran again
    rows = _raw_rows(env, "manual-")
    mine = [r for r in rows if r["identity"] in names]
    assert {r["identity"] for r in mine} == set(names)
    per_rank = Counter((r["identity"], r["rank"]) for r in mine)
    assert max(per_rank.values()) == 1  # no result stored twice by the retried task
    for name in names:  # no result lost: ranks 0..n-1 without a gap
        ranks = sorted(rank for who, rank in per_rank if who == name)
        assert ranks == list(range(len(ranks))) and ranks, name
    accepted = [r["image_id"] for r in mine if r["error"] is None]
    assert len(accepted) == len(set(accepted))
    listed = facescale(env, "datasets", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)[-1]["validation"]["success"]
