"""The review view in Airflow: the real api-server loads the plugin; real Chromium logs in, reviews, and is checked.

Airflow's api-server (``airflow api-server``, SQLite metadata in a temporary AIRFLOW_HOME, the
simple auth manager with an admin and a viewer) serves the view over the erasure tests' store
(tests/storage/erasure_store.py) with photos near the cleaning threshold. Chromium logs in
through Airflow's own login page, opens every page, keeps one photo and excludes another; the
exclusion list the next curation reads then holds both, with the admin's name. Each write
route refuses a request without credentials (401) and one from the viewer (403) and changes
nothing. The same pages render from an ``s3://`` root (moto). Screenshots go to
test-artifacts/review-view/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import requests

from facescale.storage import ExclusionList, Location
from facescale.storage.exclusions import REVIEWED_KEEP

from ...helpers import free_port, moto_bucket, page_text, stop_group, wait_for
from ...storage.erasure_store import ErasureStore, build
from .test_pages import THRESHOLD, review_rows

pytestmark = [pytest.mark.airflow, pytest.mark.browser]

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "review-view"
VENV_BIN = Path(sys.executable).parent
PASSWORDS = {"admin": "admin-pw", "reader": "reader-pw"}
WRITES = ("keep", "exclude", "undo")




def _store(location: Location, lfw_dev: Path, work: Path) -> ErasureStore:
    store = build(lfw_dev, location, work)
    store.root.review.write(pa.Table.from_pylist(review_rows(store)), threshold=THRESHOLD, version_id="v2")
    return store


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite metadata database and the simple auth manager's passwords (admin and a viewer)."""
    home = tmp_path_factory.mktemp("airflow")
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(PASSWORDS))
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=_env(home, {}), check=True,
                   capture_output=True, timeout=300)
    return home


def _env(home: Path, facescale: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACESCALE_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "no-dags"),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,reader:viewer",
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **facescale,
    )
    return env


@contextmanager
def api_server(home: Path, facescale: dict[str, str], log_name: str) -> Iterator[str]:
    """``airflow api-server`` on a free loopback port with these facescale settings; yields its base URL."""
    port = free_port()
    with (home / log_name).open("w") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=_env(home, facescale), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for("the api-server", lambda: _up(base) or process.poll() is not None, 180)
            assert process.poll() is None, (home / log_name).read_text()[-3000:]
            yield base
        finally:
            stop_group(process, timeout=30)


def _up(base: str) -> bool:
    try:
        return requests.get(f"{base}/api/v2/version", timeout=5).ok
    except requests.RequestException:
        return False


def _token(base: str, user: str) -> str:
    response = requests.post(f"{base}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=30)
    response.raise_for_status()
    return str(response.json()["access_token"])


#: Run in Airflow's environment: the asset event a nightly run emits when it publishes a version.
_ASSET_EVENT = """
import sys
from airflow.models.asset import AssetEvent, AssetModel
from airflow.utils.session import create_session
with create_session() as session:
    asset = AssetModel(name="facescale_dataset", uri="facescale://dataset")
    session.add(asset)
    session.flush()
    session.add(AssetEvent(asset_id=asset.id, extra={"version_id": sys.argv[1]}, source_dag_id="facescale_nightly",
                           source_task_id="publish", source_run_id=sys.argv[2], source_map_index=-1))
"""


@pytest.fixture(scope="module")
def local_view(airflow_home: Path, lfw_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[str, ErasureStore]]:
    work = tmp_path_factory.mktemp("review-store")
    store = _store(Location.from_uri(str(work / "store")), lfw_dev, work)
    with api_server(airflow_home, {"FACESCALE_STORAGE__ROOT": store.root.location.root}, "api-local.log") as base:
        yield base, store


@pytest.fixture
def driver() -> Iterator[Any]:
    from facescale.scraper.browser import make_driver

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    chromium = make_driver(extra_args=("--window-size=1400,1000",))
    try:
        yield chromium
    finally:
        chromium.quit()



def _images_loaded(driver: Any) -> bool:
    return bool(driver.execute_script(
        "const imgs = [...document.images];"
        "return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)"))


def _open(driver: Any, url: str, expect: str, shot: str) -> str:
    driver.get(url)
    text = wait_for(f"{expect!r} on {url}", lambda: expect in (t := page_text(driver)) and t, 30)
    wait_for(f"the images of {url}", lambda: _images_loaded(driver) or not driver.find_elements("tag name", "img"), 30)
    driver.save_screenshot(str(ARTIFACTS / f"{shot}.png"))
    return str(text)


def test_a_reviewer_logs_in_opens_every_page_keeps_one_photo_and_excludes_another(
    local_view: tuple[str, ErasureStore], airflow_home: Path, driver: Any
) -> None:
    from selenium.webdriver.common.by import By

    base, store = local_view
    ada = [store.image_id("ada-lovelace", i) for i in range(6)]
    exclusions = ExclusionList(store.root.location)
    # log in through Airflow's own login page: the view sends an anonymous visitor there
    driver.get(f"{base}/facescale/queue")
    wait_for("the login form", lambda: driver.find_elements(By.NAME, "password"), 30)
    assert "/auth/login" in driver.current_url
    driver.find_element(By.NAME, "username").send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys(PASSWORDS["admin"])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for("the queue after logging in", lambda: "To review (2)" in page_text(driver), 30)
    assert driver.current_url == f"{base}/facescale/queue"
    _open(driver, f"{base}/facescale/queue", "To review (2)", "queue")
    assert "signed in as admin" in page_text(driver) and "Grace Hopper: 6 photos held back" in page_text(driver)

    def press(image_id: str, action: str, expect: str) -> None:
        card = driver.find_element(By.CSS_SELECTOR, f"figure[data-image='{image_id}']")
        card.find_element(By.CSS_SELECTOR, f"button.{action}").click()
        wait_for(f"{action} on {image_id[:8]}", lambda: expect in card.find_element(By.CLASS_NAME, "decision").text, 15)

    press(ada[4], "keep", "kept by admin")  # the cleaner removed it (wrong_person at 0.63): a person keeps it
    press(ada[3], "exclude", "excluded by admin")  # the cleaner kept it (0.56): a person excludes it
    press(ada[3], "undo", "no decision")  # changed their mind...
    assert ada[3] not in exclusions.excluded("ada-lovelace")
    press(ada[3], "exclude", "excluded by admin")  # ...and back
    driver.save_screenshot(str(ARTIFACTS / "queue-decided.png"))
    # the exclusion list the next curation reads (decide() loads it whole): both, with the admin's name
    entries = {e.source_image_id: e for e in exclusions.entries("ada-lovelace")}
    assert entries[ada[4]].reason == REVIEWED_KEEP and entries[ada[4]].added_by == "admin"
    assert entries[ada[4]].replaced is None  # no entry before it: undo would leave none
    assert entries[ada[3]].excludes and entries[ada[3]].added_by == "admin"
    assert ada[3] in exclusions.excluded("ada-lovelace") and ada[4] in exclusions.reviewed_keep("ada-lovelace")

    text = _open(driver, f"{base}/facescale/growth", "Published versions", "growth")
    assert "v2" in text and "v1" not in text.split("Published versions")[1].split("Waiting")[0]
    text = _open(driver, f"{base}/facescale/versions/v2", "The dataset card", "version")
    assert "passed" in text and "1 identities added" in text and store.model_id in text
    assert "Dataset Card for facescale faces v2" in text
    text = _open(driver, f"{base}/facescale/identities/ada-lovelace", "Left out (2)", "identity")
    assert "Kept (4)" in text and "wrong_person" in text and "kept by admin" in text
    assert len(driver.find_elements(By.CSS_SELECTOR, "figure.photo img")) == 6  # every photo, from the crop cache
    text = _open(driver, f"{base}/facescale/runs/facescale_nightly/manual__1", "published no dataset version", "run")
    # from a DAG run to the version it made: its asset event names it, the run's tab lands on the version
    subprocess.run([sys.executable, "-c", _ASSET_EVENT, "v2", "scheduled__2026-12-02"], check=True,
                   env=_env(airflow_home, {}), capture_output=True, timeout=120)
    _open(driver, f"{base}/facescale/runs/facescale_nightly/scheduled__2026-12-02", "The dataset card", "run-version")
    assert driver.current_url == f"{base}/facescale/versions/v2"
    # the view inside Airflow's UI: its navigation entry renders the page in the UI's frame
    driver.get(f"{base}/plugin/facescale")
    wait_for("the view in the UI's frame", lambda: driver.find_elements(By.TAG_NAME, "iframe"), 30)
    frame = driver.find_element(By.TAG_NAME, "iframe")
    assert frame.get_attribute("src").endswith("/facescale/growth")
    driver.switch_to.frame(frame)
    wait_for("the growth page in the frame", lambda: "Dataset growth" in page_text(driver), 30)
    driver.switch_to.default_content()
    driver.save_screenshot(str(ARTIFACTS / "in-airflow-ui.png"))


def test_each_write_route_refuses_the_anonymous_and_a_reader_and_changes_nothing(
    local_view: tuple[str, ErasureStore],
) -> None:
    base, store = local_view
    path = store.root.location.path("curation", "exclusions.json")
    before = store.root.location.read_bytes(path)
    reader = {"Authorization": f"Bearer {_token(base, 'reader')}"}
    body = {"identity_slug": "ada-lovelace", "image_id": store.image_id("ada-lovelace", 5)}
    for route in WRITES:
        url = f"{base}/facescale/api/{route}"
        assert requests.post(url, json=body, timeout=30).status_code == 401, route
        assert requests.post(url, json=body, headers={"Authorization": "Bearer forged"}, timeout=30).status_code in (
            401, 403), route
        refused = requests.post(url, json=body, headers=reader, timeout=30)
        assert refused.status_code == 403 and "facescale_nightly" in refused.text, route
    assert store.root.location.read_bytes(path) == before
    # the reader may look: pages, photos; nobody without credentials may
    for page in ("growth", "queue", "versions/v2", "identities/ada-lovelace",
                 f"photos/ada-lovelace/{store.image_id('ada-lovelace', 0)}.jpg"):
        assert requests.get(f"{base}/facescale/{page}", headers=reader, timeout=30).status_code == 200, page
        assert requests.get(f"{base}/facescale/{page}", timeout=30, allow_redirects=False).status_code == 401, page
    # the admin may write, but only JSON (a cross-site form cannot post it) about a photo curation saw
    admin = {"Authorization": f"Bearer {_token(base, 'admin')}"}
    url = f"{base}/facescale/api/keep"
    assert requests.post(url, data=body, headers=admin, timeout=30).status_code == 422
    assert requests.post(url, json={**body, "image_id": "typo"}, headers=admin, timeout=30).status_code == 404
    assert store.root.location.read_bytes(path) == before
    # stored files other than Data Docs and plots are not served, even to the admin
    for other in ("store/registry/identities.json", "store/datasets/v2/manifest.json",
                  "store/datasets/v2/validation/../manifest.json"):
        assert requests.get(f"{base}/facescale/{other}", headers=admin, timeout=30).status_code == 404, other


@pytest.mark.s3
def test_the_same_pages_render_from_an_s3_root(airflow_home: Path, lfw_dev: Path, tmp_path: Path, driver: Any) -> None:
    with moto_bucket() as (bucket, options):
        store = _store(Location.from_uri(f"{bucket}/store", options), lfw_dev, tmp_path)
        settings = {"FACESCALE_STORAGE__ROOT": f"{bucket}/store",
                    "FACESCALE_STORAGE__STORAGE_OPTIONS": json.dumps(options)}
        with api_server(airflow_home, settings, "api-s3.log") as base:
            driver.get(f"{base}/api/v2/version")  # a page on the UI's origin, to set the login cookie on
            driver.add_cookie({"name": "_token", "value": _token(base, "admin"), "path": "/"})
            assert "To review (2)" in _open(driver, f"{base}/facescale/queue", "To review", "s3-queue")
            assert "Kept (4)" in _open(driver, f"{base}/facescale/identities/ada-lovelace", "Left out", "s3-identity")
            assert store.model_id in _open(driver, f"{base}/facescale/versions/v2", "The dataset card", "s3-version")
            assert "v2" in _open(driver, f"{base}/facescale/growth", "Published versions", "s3-growth")
