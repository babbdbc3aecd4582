"""Airflow test environments: an isolated AIRFLOW_HOME with a migrated SQLite database, the demo web.

Airflow reads its configuration when it is first imported, so everything Airflow runs in a
subprocess with its own environment (never the developer's ~/airflow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RUN_DAG = Path(__file__).with_name("_run_dag.py")
# People of lfw-dev with 20+ photos: enough to pass the tiny curation minimums below.
PEOPLE = ["Colin Powell", "Tony Blair", "Donald Rumsfeld", "George W Bush", "Vladimir Putin", "Jacques Chirac"]


def airflow_env(home: Path, **facescale: str) -> dict[str, str]:
    """The environment of an isolated Airflow (SQLite under ``home``) running the project's DAGs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACESCALE_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        FACESCALE_SCRAPER__WORKERS="1",
        FACESCALE_SCRAPER__POLITENESS_DELAY_S="0",
        # tiny curation: a handful of photos per identity is enough to be versioned
        FACESCALE_CURATION__MIN_PER_IDENTITY="4",
        FACESCALE_CURATION__PER_IDENTITY="6",
        FACESCALE_CURATION__AUGMENT_FACTOR="2",
        FACESCALE_CURATION__CONCURRENCY="1",
        # tiny training: one epoch of two batches on the tiny backbone (the DAGs' mechanics; the
        # real Inception V3 trains in tests/training, make demo and the cluster tier)
        FACESCALE_TRAINING__BACKBONE="tiny",
        FACESCALE_TRAINING__IMAGE_SIZE="75",
        FACESCALE_TRAINING__MAX_EPOCHS="1",
        FACESCALE_TRAINING__BATCH_SIZE="8",
        FACESCALE_ORCHESTRATION__MAX_STEPS_PER_EPOCH="2",
        FACESCALE_ORCHESTRATION__MIN_TEST_TOP1="0",
        FACESCALE_ORCHESTRATION__MIN_SERVED_RIGHT="0",  # a test photo or two per identity: the bar's mechanics only
        FACESCALE_ORCHESTRATION__WORK_DIR=str(home / "runs"),
    )
    env.update({f"FACESCALE_{k.upper()}": v for k, v in facescale.items()})
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)


@dataclass
class DemoWebProcess:
    url: str
    process: subprocess.Popen[str]


@pytest.fixture(scope="module")
def demo_web_url(lfw_dev: Path) -> Iterator[str]:
    """The demo web (`facescale demo-web --port 0`) over lfw-dev, as scripts/demo.sh starts it."""
    process = subprocess.Popen(
        [str(VENV_BIN / "facescale"), "demo-web", str(lfw_dev), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        yield line.removeprefix("listening on ").strip()
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass
class Airflow:
    """An isolated Airflow home with its database migrated and the DAGs' storage root."""

    home: Path
    env: dict[str, str]
    root: Path
    runs: list[dict[str, Any]] = field(default_factory=list)

    def test_dag(self, dag_id: str, logical_date: str | None, conf: dict[str, Any], **facescale: str) -> dict[str, Any]:
        """Run ``dag.test()`` in a subprocess; return what `_run_dag.py` reports."""
        env = dict(self.env)
        env.update({f"FACESCALE_{k.upper()}": v for k, v in facescale.items()})
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(RUN_DAG), dag_id, logical_date or "none", json.dumps(conf)],
            env=env, capture_output=True, text=True, timeout=900,
        )
        log = self.home / f"{dag_id}-{len(self.runs)}.log"
        log.write_text(done.stdout + done.stderr)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        assert done.returncode == 0 and lines, f"dag.test of {dag_id} failed; log: {log}\n{done.stderr[-3000:]}"
        result = json.loads(lines[-1].removeprefix("RESULT "))
        result["wall_seconds"] = time.monotonic() - started
        result["log"] = str(log)
        self.runs.append(result)
        return result


def make_airflow(home: Path, **facescale: str) -> Airflow:
    home.mkdir(parents=True, exist_ok=True)
    root = home / "data"
    env = airflow_env(home, storage__root=str(root), **facescale)
    migrate(env)
    return Airflow(home, env, root)


@pytest.fixture(scope="session")
def airflow_tools() -> Any:
    """This module's helpers for test modules (tests/ is not a package)."""
    import types

    return types.SimpleNamespace(
        REPO=REPO, PEOPLE=PEOPLE, airflow_env=airflow_env, make_airflow=make_airflow, VENV_BIN=VENV_BIN
    )
