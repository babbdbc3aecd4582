"""DAG integrity: every DAG file parses without errors, without heavy imports, with tags and retries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.airflow

HEAVY = ("tensorflow", "ray", "selenium", "cv2", "keras", "pyarrow")
REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p.name for p in (REPO / "dags").glob("*.py"))
EXPECTED = {"facescale_nightly", "facescale_retrain", "facescale_add_identities"}

# Parses one DAG file with Airflow's own DagBag in a fresh interpreter and reports the DAGs
# it found, the heavy modules the parse loaded, and how long parsing took (airflow's import
# excluded: it is paid once per dag-processor, not per file).
PARSE = """
import json, sys, time
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
import airflow.sdk  # warm: its import is paid once per process, not per file
before = set(sys.modules)
started = time.perf_counter()
# as the DAG processor parses a file of the dags-folder bundle (which puts the folder on sys.path)
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=Path(sys.argv[2]))
seconds = time.perf_counter() - started
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r} and m not in before)
dags = {{}}
for dag in bag.dags.values():
    dags[dag.dag_id] = {{
        "tags": sorted(dag.tags), "schedule": type(dag.timetable).__name__,
        "cron": getattr(dag.timetable, "expression", None),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs, "doc_md": bool(dag.doc_md), "params": sorted(dag.params),
        "outlets": sorted(a.name for t in dag.tasks for a in t.outlets),
        "tasks": {{t.task_id: {{"retries": t.retries, "backoff": t.retry_exponential_backoff, "pool": t.pool,
                               "mapped": "MappedOperator" in type(t).__name__}}
                  for t in dag.tasks}},
    }}
print("RESULT " + json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}}, "dags": dags,
                               "files": sorted(bag.file_last_changed), "heavy": heavy, "seconds": seconds}}))
"""


def _parse(path: Path, env: dict[str, str]) -> dict[str, Any]:
    code = PARSE.format(heavy=set(HEAVY))
    args = [sys.executable, "-c", code, str(path), str(REPO / "dags")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory, airflow_tools: Any) -> dict[str, dict[str, Any]]:
    env = airflow_tools.airflow_env(tmp_path_factory.mktemp("airflow-home"))
    return {name: _parse(REPO / "dags" / name, env) for name in DAG_FILES}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, airflow_tools: Any) -> dict[str, Any]:
    env = airflow_tools.airflow_env(tmp_path_factory.mktemp("airflow-home"))
    return _parse(REPO / "dags", env)


def _dags(parsed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {dag_id: dag for result in parsed.values() for dag_id, dag in result["dags"].items()}


def test_every_dag_is_there(parsed: dict[str, dict[str, Any]]) -> None:
    assert set(_dags(parsed)) == EXPECTED


def test_the_folder_parses_as_the_dag_processor_lists_it(folder: dict[str, Any]) -> None:
    """The DAG files parse; the helper package they share is not a DAG file (dags/.airflowignore)."""
    assert folder["errors"] == {}
    assert set(folder["dags"]) == EXPECTED
    assert [Path(f).name for f in folder["files"]] == DAG_FILES


@pytest.mark.parametrize("name", DAG_FILES)
def test_dag_file_parses_light_and_fast(parsed: dict[str, dict[str, Any]], name: str) -> None:
    result = parsed[name]
    assert result["errors"] == {}
    assert result["dags"], f"{name} defines no DAG"
    assert result["heavy"] == [], f"parsing {name} imported {result['heavy']}"
    assert result["seconds"] < 5, f"parsing {name} took {result['seconds']:.2f} s"


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_has_tags_docs_and_retries(parsed: dict[str, dict[str, Any]], dag_id: str) -> None:
    dag = _dags(parsed)[dag_id]
    assert "facescale" in dag["tags"]
    assert dag["doc_md"]
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    for task_id, task in dag["tasks"].items():
        assert task["retries"] >= 1, f"{dag_id}.{task_id} has no retries"


@pytest.mark.parametrize("dag_id", ["facescale_nightly", "facescale_add_identities"])
def test_scraping_is_mapped_pooled_and_backs_off(parsed: dict[str, dict[str, Any]], dag_id: str) -> None:
    scrape = _dags(parsed)[dag_id]["tasks"]["scrape"]
    assert scrape["mapped"]
    assert scrape["pool"] == "facescale_scrape"
    assert scrape["retries"] >= 3 and scrape["backoff"] >= 2
    assert _dags(parsed)[dag_id]["outlets"] == ["facescale_dataset"]


def test_schedules_and_params(parsed: dict[str, dict[str, Any]]) -> None:
    dags = _dags(parsed)
    assert dags["facescale_nightly"]["cron"] == "0 0 * * *"
    assert dags["facescale_retrain"]["schedule"] == "AssetTriggeredTimetable"
    assert dags["facescale_add_identities"]["schedule"] == "NullTimetable"
    assert {"engine", "base_url", "images_per_keyword", "batch_size"} <= set(dags["facescale_nightly"]["params"])
    assert {"force", "version_id"} <= set(dags["facescale_retrain"]["params"])
    assert "names" in dags["facescale_add_identities"]["params"]
    assert dags["facescale_retrain"]["outlets"] == ["facescale_model"]
