"""The web page in headless Chromium: identify a photo (boxes and names drawn), verify two photos.

The API runs under a real uvicorn server on a free loopback port; the screenshots are saved
under test-artifacts/serving/.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from facescale.config import ServingSettings
from facescale.serving.api import create_app
from facescale.serving.loading import ModelWatcher

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "serving"


@pytest.fixture(scope="module")
def server(recognizer) -> Iterator[str]:
    watcher = ModelWatcher(lambda ref: recognizer, lambda: recognizer.model_id, 3600)
    watcher.refresh()
    app = create_app(ServingSettings(), watcher, start_watcher=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    port = uv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


def _wait(driver, condition, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (value := condition(driver)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; page says: {driver.find_element('tag name', 'body').text[:500]}")
        time.sleep(0.2)
    return value


def _upload(driver, element_id: str, path: Path) -> None:
    field = driver.find_element("id", element_id)
    driver.execute_script("arguments[0].hidden = false", field)  # a drop zone hides the real input
    field.send_keys(str(path))


def test_identify_and_verify_in_the_page(server: str, served_base, recognizer) -> None:
    from facescale.scraper.browser import make_driver

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    from selenium.webdriver.remote.file_detector import UselessFileDetector

    driver = make_driver(extra_args=("--window-size=1200,1400",))
    driver.file_detector = UselessFileDetector()  # a local browser reads the path itself (no Grid upload)
    try:
        driver.get(server)
        _wait(driver, lambda d: recognizer.model_id in d.find_element("id", "model").text)
        assert "default backend dlib" in driver.find_element("id", "model").text

        # identify: a picture of two people side by side, drawn with both boxes
        two = served_base.two_people(ARTIFACTS / "two-people.jpg")
        _upload(driver, "identify-file", two)
        rows = _wait(driver, lambda d: d.find_elements("css selector", "#identify-table tbody tr"))
        assert len(rows) == 2
        status = driver.find_element("id", "identify-status").text
        assert status.startswith("2 face(s)")
        canvas = driver.find_element("id", "identify-canvas")
        assert canvas.is_displayed() and canvas.get_attribute("width") == "500"
        names = {r.find_elements("tag name", "td")[1].text for r in rows}
        assert names == {"Colin Powell", "Tony Blair"}  # the default backend (dlib's gallery) names both
        assert "dlib backend" in status
        # the boxes are drawn: pixels inside the canvas differ from the photo at the box edges
        drawn = driver.execute_script(
            "const c = document.getElementById('identify-canvas').getContext('2d');"
            "return Array.from(c.getImageData(0, 0, 500, 250).data).filter((v, i) => i % 4 === 1 && v > 190).length;"
        )
        assert drawn > 500  # the green/orange outlines and labels
        driver.save_screenshot(str(ARTIFACTS / "identify.png"))

        # verify: two photos of one person, first with our model (chosen), then with the default
        _upload(driver, "verify-file-a", served_base.photo("Colin_Powell", 50))
        _upload(driver, "verify-file-b", served_base.photo("Colin_Powell", 51))
        driver.find_element("css selector", "#backend option[value=model]").click()
        driver.find_element("id", "verify-button").click()
        result = _wait(driver, lambda d: (t := d.find_element("id", "verify-result").text) != "verifying..." and t)
        assert "model backend" in result
        driver.find_element("css selector", "#backend option[value='']").click()
        driver.find_element("id", "verify-button").click()
        result = _wait(driver, lambda d: "dlib backend" in (t := d.find_element("id", "verify-result").text) and t)
        assert result.startswith("Same person") and "dlib backend" in result
        driver.save_screenshot(str(ARTIFACTS / "verify.png"))

        # a refusal is shown as the API's message
        _upload(driver, "verify-file-b", served_base.photo("Jacques_Chirac", 30))
        driver.find_element("id", "verify-button").click()
        result = _wait(driver, lambda d: (t := d.find_element("id", "verify-result").text) != "verifying..." and t)
        assert result.startswith("Different people")
    finally:
        driver.quit()
    assert (ARTIFACTS / "identify.png").stat().st_size > 10_000
