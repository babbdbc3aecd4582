"""growth: identities and samples per published version, plotted, tabled, and rendered in headless Chromium.

The screenshot is saved under test-artifacts/pipeline/growth.png.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from facescale.pipeline.growth import PAGE, PLOT, write_growth
from facescale.storage import DatasetStore, IdentityEntry, Location, ValidationSummary
from facescale.storage.layout import CURATION_DIR
from facescale.storage.versions import GROWTH_INDEX

from ..storage.conftest import curated_row

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "pipeline"
# version -> (identities, rows, removals, published)
NIGHTS = {
    "night-1": (2, 8, {"no_face": 5, "blurry": 2}, True),
    "night-2": (3, 12, {"no_face": 9, "wrong_person": 4, "blurry": 1, "dark": 1}, True),
    "night-3": (4, 16, {"multiple_faces": 3}, False),  # the gate failed: not in the growth view
    "night-4": (4, 20, {"wrong_person": 7, "no_face": 6, "duplicate": 2, "dark": 1}, True),
}


def _store(root: Path) -> DatasetStore:
    store = DatasetStore(Location.from_uri(str(root)))
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for n, (version, (identities, rows, removed, published)) in enumerate(NIGHTS.items()):
        table = [curated_row(i) | {"label": i % identities, "identity_slug": f"p{i % identities}"} for i in range(rows)]
        entries = [
            IdentityEntry(name=f"Person {k}", slug=f"p{k}", label=k,
                          counts={"train": sum(1 for r in table if r["label"] == k)})
            for k in range(identities)
        ]
        with store.create(version, parent=None) as writer:
            writer.write(table)
            manifest = writer.commit(entries, notes={"curation": {"rejected": removed}})
        # nights a day apart (the x axis is publication time)
        stamped = manifest.model_copy(update={"created_at": start + timedelta(days=n)})
        store.location.write_bytes_atomic(store.manifest_path(version), stamped.to_json())
        store.publish(version, ValidationSummary(success=published, suite="facescale_curated"))
    return store


def test_the_view_has_one_point_and_row_per_published_version(tmp_path: Path) -> None:
    store = _store(tmp_path)
    page = write_growth(store)
    curation = tmp_path / CURATION_DIR
    assert page == str(curation / PAGE)
    with Image.open(io.BytesIO((curation / PLOT).read_bytes())) as plot:
        assert plot.format == "PNG" and plot.size == (800, 360)
    text = (curation / PAGE).read_text()
    # newest first, the failed night left out, each with its top three removal reasons
    assert text.index("night-4") < text.index("night-2") < text.index("night-1") and "night-3" not in text
    assert "wrong_person 7, no_face 6, duplicate 2</td>" in text
    assert "no_face 5, blurry 2</td>" in text
    assert [p.samples for p in store.growth()] == [8, 12, 20]
    assert [p.identities for p in store.growth()] == [2, 3, 4]


def test_the_points_come_from_the_growth_index(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.growth()
    index = json.loads((tmp_path / "datasets" / GROWTH_INDEX).read_text())
    assert sorted(index["entries"]) == ["night-1", "night-2", "night-4"]  # published ones only (they are final)
    # the index is derived data: a point whose version is gone leaves the view at once
    store.location.remove_tree(store.version_dir("night-2"))
    assert [p.version_id for p in store.growth()] == ["night-1", "night-4"]


def test_an_empty_store_draws_an_empty_view(tmp_path: Path) -> None:
    store = DatasetStore(Location.from_uri(str(tmp_path)))
    write_growth(store)
    assert "<th>top removal reasons</th></tr></table>" in (tmp_path / CURATION_DIR / PAGE).read_text()


@pytest.mark.browser
def test_the_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    from facescale.scraper.browser import make_driver

    store = _store(tmp_path)
    page = write_growth(store)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = make_driver(extra_args=("--window-size=1000,900", "--allow-file-access-from-files"))
    try:
        driver.get(Path(page).as_uri())
        loaded = driver.execute_script(
            "const img = document.getElementById('growth'); return img.complete && img.naturalWidth;"
        )
        assert loaded == 800  # the plot was found and decoded next to the page
        rows = driver.find_elements("css selector", "#versions tr")
        assert len(rows) == 1 + 3
        assert rows[1].text.startswith("night-4")
        driver.save_screenshot(str(ARTIFACTS / "growth.png"))
    finally:
        driver.quit()
    with Image.open(ARTIFACTS / "growth.png") as shot:
        assert shot.size[0] >= 800
