"""datadocs: a version's Data Docs work with the network off; the scripts and styles are kept once per store.

The browser test loads the Data Docs in headless Chromium whose every network request goes to a
dead proxy (file:// pages are read from disk, anything http(s) fails), and saves screenshots under
test-artifacts/pipeline/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from facescale.pipeline.datadocs import CDN, rewrite
from facescale.pipeline.validate import DATA_DOCS_DIR, validate_version
from facescale.storage import DatasetStore, Location
from facescale.storage.layout import DATADOCS_STATIC_DIR

from .test_validate import CONFIG, entries, make_rows

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "pipeline"
# what a page loads (scripts, styles, images): never from the network once offline
_LOADED = re.compile(r"<(?:script|link|img)\b[^>]*?(?:src|href)=\"([^\"]+)\"")


def _published(root: Path, *versions: str) -> DatasetStore:
    store = DatasetStore(Location.from_uri(str(root)))
    rows = make_rows()
    for version in versions:
        with store.create(version, parent=None, config=CONFIG) as writer:
            writer.write(rows)
            writer.commit(entries(rows))
        assert validate_version(store, version).success
    return store


def _pages(store: DatasetStore, version: str) -> list[Path]:
    return sorted(Path(store.version_dir(version), DATA_DOCS_DIR).rglob("*.html"))


def test_rewrite_points_every_cdn_link_and_gx_static_link_at_the_shared_folder() -> None:
    page = (
        '<link href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>'
        '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
        '<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" integrity="sha384-x" '
        'crossorigin="anonymous"></script>'
        '<link rel="shortcut icon" href="../../static/images/favicon.ico"/>'
        '<img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1">'
        '<a href="https://greatexpectations.io">GX</a>'
    )
    out = rewrite(page, up=6)
    up = "../" * 6 + DATADOCS_STATIC_DIR
    assert f'href="{up}/npm/bootstrap/dist/css/bootstrap.min.css"' in out
    assert f'src="{up}/npm/jquery/dist/jquery.min.js"' in out
    assert f'src="{up}/npm/bootstrap/dist/js/bootstrap.min.js"></script>' in out  # no SRI / CORS on file://
    assert f'href="{up}/gx/images/favicon.ico"' in out
    assert f'src="{up}/gx/images/logo-long.png"' in out
    assert '<a href="https://greatexpectations.io">' in out  # links people click stay


def test_validation_writes_offline_docs_and_the_assets_once_per_store(tmp_path: Path) -> None:
    store = _published(tmp_path, "v1", "v2")
    shared = tmp_path / DATADOCS_STATIC_DIR
    for rel in set(CDN.values()):
        assert (shared / "npm" / rel).is_file(), rel
    assert (shared / "gx" / "images" / "favicon.ico").is_file()
    for version in ("v1", "v2"):
        assert not (Path(store.version_dir(version)) / DATA_DOCS_DIR / "static").exists()  # no per-version copy
        for page in _pages(store, version):
            for target in _LOADED.findall(page.read_text()):
                assert not target.startswith(("http:", "https:", "//")), (page.name, target)
                if not target.startswith("#"):
                    assert (page.parent / target).resolve().is_file(), (page.name, target)
    # the card links each suite's result page
    card = Path(store.card_path("v2")).read_text()
    pages = store.get("v2").validation.suite_pages  # type: ignore[union-attr]
    assert sorted(pages) == ["facescale_curated.counts", "facescale_curated.rows", "facescale_curated.schema"]
    for suite, page in pages.items():
        assert f"[{suite}]({page})" in card and Path(store.version_dir("v2"), page).is_file()


def test_without_assets_the_docs_stay_as_gx_built_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESCALE_DATADOCS_ASSETS", str(tmp_path / "nowhere"))
    store = _published(tmp_path / "store", "v1")
    assert not (tmp_path / "store" / DATADOCS_STATIC_DIR).exists()
    index = Path(store.version_dir("v1"), DATA_DOCS_DIR, "index.html").read_text()
    assert "https://code.jquery.com/jquery-3.7.1.min.js" in index


@pytest.mark.browser
def test_the_index_lists_the_results_with_the_network_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facescale.scraper.browser import make_driver

    offline = _published(tmp_path / "offline", "v1")
    monkeypatch.setenv("FACESCALE_DATADOCS_ASSETS", str(tmp_path / "nowhere"))
    online = _published(tmp_path / "online", "v1")  # as GX builds them: CDN links
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    no_network = ("--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--window-size=1200,900")
    driver = make_driver(extra_args=no_network)
    try:
        shown = {}
        for name, store in (("offline", offline), ("online", online)):
            driver.get(Path(store.version_dir("v1"), DATA_DOCS_DIR, "index.html").as_uri())
            driver.implicitly_wait(0)
            results = "#section-1-content-block-2-1-body-table tbody tr[data-index]"  # the Validation Results tab
            shown[name] = len(driver.find_elements("css selector", results))
            driver.save_screenshot(str(ARTIFACTS / f"datadocs-{name}.png"))
        styled = driver.execute_script("return typeof jQuery")  # the online page's scripts never loaded
    finally:
        driver.quit()
    assert shown == {"offline": 3, "online": 0}  # three suites' results; none where the CDNs are out of reach
    assert styled == "undefined"
