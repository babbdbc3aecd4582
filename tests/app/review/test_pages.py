"""review.pages: what the review view shows, read from a store with two versions, a model, crops and decisions.

The store is the erasure tests' (tests/storage/erasure_store.py: real Parquet shards, crop cache,
card, model files), with a review table whose distances put some photos near the threshold.
No Airflow here: tests/app/review/test_view.py drives the same pages through Airflow's api-server.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from facescale.app.review import pages
from facescale.errors import NotFoundError
from facescale.storage import Location

from ...storage.erasure_store import ErasureStore, build

THRESHOLD = 0.6


def review_rows(store: ErasureStore) -> list[dict[str, object]]:
    """Ada: 0-3 kept (3 at 0.56, doubtful), 4 wrong_person at 0.63 (doubtful), 5 at 0.9; Alan kept; Grace ambiguous."""
    rows: list[dict[str, object]] = []
    distances = {0: 0.2, 1: 0.25, 2: 0.3, 3: 0.56, 4: 0.63, 5: 0.9}
    names = {"ada-lovelace": "Ada Lovelace", "alan-turing": "Alan Turing", "grace-hopper": "Grace Hopper"}
    chunks = {slug: pages.photo_chunk(store.root, slug, store.image_id(slug, 0)) for slug in names}
    for slug, name in names.items():
        for i in range(len(store.photos[slug])):
            if slug == "ada-lovelace":
                status, distance = ("kept" if i < 4 else "wrong_person"), distances[i]
            elif slug == "alan-turing":
                status, distance = "kept", 0.2 + i / 100
            else:
                status, distance = "ambiguous", 0.5
            rows.append({"identity_slug": slug, "identity": name, "image_id": store.image_id(slug, i),
                         "status": status, "distance": distance, "group": 0, "reviewed": False,
                         "chunk": chunks[slug]})
    return rows


@pytest.fixture
def store(lfw_dev: Path, tmp_path: Path) -> ErasureStore:
    built = build(lfw_dev, Location.from_uri(str(tmp_path / "store")), tmp_path)
    rows = review_rows(built)
    built.root.review.write(pa.Table.from_pylist(rows), threshold=THRESHOLD, version_id="v2")
    return built


def test_growth_lists_published_versions_and_who_waits(store: ErasureStore) -> None:
    growth = pages.growth(store.root)
    assert [v.version_id for v in growth.versions] == ["v2"]  # v1 was never published
    (v2,) = growth.versions
    assert (v2.identities, v2.samples) == (3, store.root.datasets.get("v2").rows)
    assert growth.latest == "v2" and growth.waiting == [] and not growth.has_plot


def test_a_version_shows_its_card_gate_diff_and_models(store: ErasureStore) -> None:
    page = pages.version(store.root, "v2")
    assert page.parent == "v1" and page.published and page.gate is not None and page.gate["success"]
    assert page.diff is not None and page.diff.identities_added == {"grace-hopper": 10}
    assert page.card_html is not None and "<h1>Dataset Card for facescale faces v2</h1>" in page.card_html
    assert "---" not in page.card_html.split("</h1>")[0]  # the YAML front matter is not shown
    (model,) = page.models
    assert model.model_id == store.model_id and model.plots and all(p.endswith(".png") for p in model.plots)
    for plot in model.plots:  # every plot the page shows is one the view streams
        assert pages.servable(plot) == plot and store.root.location.exists(store.root.location.path(plot))
    with pytest.raises(NotFoundError):
        pages.version(store.root, "v9")


def test_an_identity_shows_kept_and_removed_photos_with_reasons_and_decisions(store: ErasureStore) -> None:
    ada = [store.image_id("ada-lovelace", i) for i in range(6)]
    store.root.exclusions.keep("ada-lovelace", [ada[4]], by="reviewer")
    page = pages.identity(store.root, "ada-lovelace")
    assert page.name == "Ada Lovelace" and page.threshold == THRESHOLD
    assert [p.image_id for p in page.kept] == [ada[3], ada[2], ada[1], ada[0]]  # the doubtful first
    assert [p.image_id for p in page.removed] == [ada[4], ada[5]]  # nearest the threshold first
    assert page.removed_by_reason == [("wrong_person", 2)]
    kept_by_person = page.removed[0].decision
    assert kept_by_person is not None and kept_by_person.added_by == "reviewer" and not kept_by_person.excludes
    assert page.removed[1].decision is not None and page.removed[1].decision.source == "auto"  # the store's own entry
    assert page.decisions == 1
    crops = store.root.crops.crops_of(pages.photo_chunk(store.root, "ada-lovelace", ada[0]), "ada-lovelace")
    assert set(crops) >= set(ada[:4])  # each photo's crop, found by the chunk the table names
    with pytest.raises(NotFoundError):
        pages.identity(store.root, "nobody")


def test_the_queue_holds_the_doubtful_photos_on_both_sides_and_the_ambiguous(store: ErasureStore) -> None:
    ada = [store.image_id("ada-lovelace", i) for i in range(6)]
    queue = pages.queue(store.root)
    assert [p.image_id for p in queue.doubtful] == [ada[4], ada[3]]  # 0.03 above, 0.04 below; 0.9 is not
    assert queue.ambiguous == [("grace-hopper", "Grace Hopper", 6)]
    assert queue.decided == []
    store.root.exclusions.exclude("ada-lovelace", [ada[3]], by="reviewer")  # a person decided: it leaves the queue
    after = pages.queue(store.root)
    assert [p.image_id for p in after.doubtful] == [ada[4]] and [p.image_id for p in after.decided] == [ada[3]]
    assert ada[5] in {p.image_id for p in pages.queue(store.root, margin=0.5).doubtful}  # a wider margin reaches 0.9


def test_the_view_streams_only_data_docs_plots_and_the_growth_plot() -> None:
    docs = "datasets/v2/validation/data_docs/index.html"
    assert pages.servable(docs) == docs
    assert pages.servable("static/datadocs/npm/jquery/dist/jquery.min.js")
    assert pages.servable("models/m-1/files/eval/confusion.png")
    assert pages.servable("/curation/growth.png") == "curation/growth.png"
    for path in ("datasets/v2/manifest.json", "datasets/v2/shards/part-0.parquet", "registry/identities.json",
                 "curation/exclusions.json", "datasets/v2/validation/../manifest.json",
                 "static/datadocs/../../registry/identities.json", "models/m-1/files/model.keras", ""):
        with pytest.raises(NotFoundError):
            pages.servable(path)


def test_a_runs_asset_events_name_its_versions_and_models() -> None:
    extras: list[dict[str, object]] = [{"version_id": "nightly-1"}, {"version_id": "nightly-1"},
                                       {"model_id": "m-2", "version_id": "nightly-1"}, {}]
    assert pages.run_versions(extras) == (["nightly-1"], ["m-2"])
