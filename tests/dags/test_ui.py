"""The Airflow UI in a real browser: `airflow standalone` runs the nightly DAG against the demo web.

The test starts Airflow (api-server, scheduler, dag-processor, triggerer; SQLite) in a temporary
AIRFLOW_HOME, triggers facescale_nightly through the REST API v2, waits for the run to succeed,
checks that the dataset Asset event scheduled facescale_retrain, then opens the DAG's grid in
headless Chromium and saves screenshots under test-artifacts/airflow-ui/.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from ..helpers import free_port, page_text, stop_group, wait_for

pytestmark = [pytest.mark.airflow, pytest.mark.browser, pytest.mark.ray, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "airflow-ui"




class Api:
    """The REST API v2 with a JWT from the simple auth manager's generated admin password."""

    def __init__(self, base: str, home: Path) -> None:
        self.base = base
        password_file = home / "simple_auth_manager_passwords.json.generated"
        password = wait_for("the generated admin password", lambda: password_file.is_file()
                            and json.loads(password_file.read_text()).get("admin"), 120, every=2.0)
        response = requests.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        response.raise_for_status()
        self.token = response.json()["access_token"]
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def get(self, path: str) -> Any:
        response = self.session.get(f"{self.base}/api/v2{path}", timeout=30)
        return response.json() if response.ok else None

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        response = self.session.patch(f"{self.base}/api/v2{path}", json=body, timeout=30)
        assert response.ok, response.text
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.session.post(f"{self.base}/api/v2{path}", json=body, timeout=30)
        assert response.ok, response.text
        return response.json()


@pytest.fixture
def standalone(tmp_path: Path, airflow_tools: Any, demo_web_url: str) -> Any:
    home = tmp_path / "airflow"
    keywords = tmp_path / "keywords.txt"
    keywords.write_text("\n".join(airflow_tools.PEOPLE[:2]) + "\n")
    airflow = airflow_tools.make_airflow(
        home, orchestration__keywords_file=str(keywords), orchestration__new_per_night="2",
        scraper__base_url=demo_web_url,
    )
    port = free_port()
    # Paused at creation: the scheduler would otherwise start the latest night on its own
    # (catchup=False still runs the most recent interval); the test triggers that night itself.
    env = dict(airflow.env, AIRFLOW__API__PORT=str(port), AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
               AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
               AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/")
    env["PATH"] = f"{airflow_tools.VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # standalone starts `airflow ...`
    subprocess.run([str(airflow_tools.VENV_BIN / "airflow"), "pools", "set", "facescale_scrape", "2", "scrape"],
                   env=env, check=True, capture_output=True)
    log = (home / "standalone.log").open("w")
    process = subprocess.Popen(
        [str(airflow_tools.VENV_BIN / "airflow"), "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("the api-server", lambda: _healthy(base) or process.poll() is not None, 240, every=2.0)
        assert process.poll() is None, f"airflow standalone exited: {home / 'standalone.log'}"
        yield airflow, base, demo_web_url
    finally:
        stop_group(process)
        log.close()


def _healthy(base: str) -> bool:
    try:
        health = requests.get(f"{base}/api/v2/monitor/health", timeout=5).json()
    except (requests.RequestException, ValueError):
        return False
    return health.get("scheduler", {}).get("status") == "healthy"


def test_nightly_run_shows_as_successful_in_the_ui(standalone: Any) -> None:
    from facescale.scraper.browser import make_driver

    airflow, base, demo_web_url = standalone
    api = Api(base, airflow.home)
    wait_for("the DAGs to be parsed", lambda: api.get("/dags/facescale_nightly") and api.get("/dags/facescale_retrain"),
             240, every=2.0)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    run = api.post("/dags/facescale_nightly/dagRuns", {
        "logical_date": midnight.isoformat(),
        "conf": {"base_url": demo_web_url, "images_per_keyword": 12, "batch_size": 1},
    })
    run_id = run["dag_run_id"]
    for dag_id in ("facescale_nightly", "facescale_retrain"):  # the scheduler finds the night's run taken
        api.patch(f"/dags/{dag_id}", {"is_paused": False})
    path = f"/dags/facescale_nightly/dagRuns/{run_id}"
    final = wait_for("the nightly run to finish",
                     lambda: (r := api.get(path)) and r["state"] in ("success", "failed") and r, 900, every=5)
    tasks = api.get(f"{path}/taskInstances")["task_instances"]
    assert final["state"] == "success", {t["task_id"]: t["state"] for t in tasks}
    assert sorted((t["task_id"], t["map_index"]) for t in tasks if t["task_id"] == "scrape") == [
        ("scrape", 0), ("scrape", 1)]
    events = api.get("/assets/events?source_dag_id=facescale_nightly")["asset_events"]
    assert [e["extra"]["version_id"] for e in events] == [f"nightly-{midnight:%Y%m%d}"]
    retrain = wait_for("the asset-triggered retraining run",
                       lambda: api.get("/dags/facescale_retrain/dagRuns")["dag_runs"], 120, every=2.0)
    assert retrain[0]["run_type"] == "asset_triggered"
    # the review view's "Dataset version" tab on this run: the run's asset event leads to the version it made
    view = api.session.get(f"{base}/facescale/runs/facescale_nightly/{run_id}", allow_redirects=False, timeout=30)
    assert view.status_code == 303, view.text
    assert view.headers["location"].endswith(f"/facescale/versions/nightly-{midnight:%Y%m%d}")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = make_driver(extra_args=("--window-size=1600,1000",))
    try:
        driver.get(f"{base}/api/v2/version")  # a page on the UI's origin, to set the login cookie on
        driver.add_cookie({"name": "_token", "value": api.token, "path": "/"})
        driver.get(f"{base}/dags/facescale_nightly")
        wait_for("the grid to show the run",
                 lambda: run_id in driver.page_source or "Success" in page_text(driver), 60, 1)
        driver.save_screenshot(str(ARTIFACTS / "facescale_nightly-grid.png"))
        driver.get(f"{base}/dags/facescale_nightly/runs/{run_id}")
        # the run's page: its state badge, its grid column and the table of its task instances
        text = wait_for("the run page to list the task instances",
                        lambda: f"{len(tasks)} Task Instances" in (t := page_text(driver)) and t, 60, 1)
        driver.save_screenshot(str(ARTIFACTS / "facescale_nightly-run.png"))
        assert run_id in text and "Success" in text
        assert "Failed" not in text and "Running" not in text
    finally:
        driver.quit()
    assert (ARTIFACTS / "facescale_nightly-grid.png").stat().st_size > 10_000
