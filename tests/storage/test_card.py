"""card: every published version carries a Hugging Face dataset card generated from its records."""

from __future__ import annotations

import pytest
import yaml
from huggingface_hub import DatasetCard

from facescale.storage import CropStore, DatasetStore, Location, RawStore, ValidationSummary
from facescale.storage.card import card_lineage, label_names, render_card, size_category

from .conftest import ProductStore, curated_row, identity_entries


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    head, _, _ = text[4:].partition("\n---\n")
    return yaml.safe_load(head)


def test_publishing_writes_the_card_in_the_hugging_face_layout(product_store: ProductStore) -> None:
    store = product_store.store
    path = store.card_path("v2")
    card = DatasetCard.load(path)  # huggingface_hub parses the YAML metadata and the body
    data = card.data.to_dict()
    assert data["task_categories"] == ["image-classification"]
    assert data["size_categories"] == ["n<1K"]
    assert data["license"] == "other"
    assert {f["name"] for f in data["dataset_info"]["features"]} >= {"image", "label", "split", "identity"}
    # no `splits` (datasets would check their num_bytes against its own Arrow sizes and refuse to load)
    assert "splits" not in data["dataset_info"]
    assert data["configs"] == [{"config_name": "default", "data_files": "shards/*.parquet"}]
    for section in ("## Dataset Details", "## Uses", "## Dataset Structure", "## Dataset Creation",
                    "### Personal and Sensitive Information", "## Bias, Risks, and Limitations"):
        assert section in card.text


def test_the_card_tells_identities_collection_curation_gate_and_lineage(product_store: ProductStore) -> None:
    text = product_store.location.read_bytes(product_store.store.card_path("v2")).decode()
    manifest = product_store.store.get("v2")
    for entry in manifest.identities:  # every identity with its label and split counts
        counts = " | ".join(str(entry.counts[s]) for s in ("train", "val", "test"))
        row = f"| {entry.name} | {entry.label} | {counts} |"
        assert row in text
    # collection: both RAW runs (through the crop chunks), the engine, the keywords done
    assert "`night-1`" in text and "`night-2`" in text
    assert "`demo` (2 runs)" in text
    assert "3 keywords (identities) done" in text
    # curation: thresholds from the config, removal reasons with counts, most frequent first
    assert "distance > 0.6" in text and "exactly 10 source photos" in text
    assert text.index("| no_face | 4 |") < text.index("| wrong_person | 2 |") < text.index("| multiple_faces | 1 |")
    # what the downloader kept and rejected, from the RAW runs' error column
    assert "Downloads: 30 images stored, 2 results rejected." in text and "| http_status | 2 |" in text
    # the gate and its Data Docs; lineage; the takedown path
    assert "**passed** (29 of 29 expectations met" in text
    assert "[Data Docs](validation/data_docs/index.html)" in text
    assert "- Parent version: `v1`" in text
    assert "facescale exclusions add" in text


def test_an_unpublished_version_gets_no_card_and_a_failed_gate_writes_none(tmp_path) -> None:
    store = DatasetStore(Location.from_uri(str(tmp_path)))
    rows = [curated_row(i) for i in range(8)]
    with store.create("v1", parent=None) as writer:
        writer.write(rows)
        writer.commit(identity_entries(rows))
    assert not store.location.exists(store.card_path("v1"))
    store.publish("v1", ValidationSummary(success=False, suite="s", failures=["labels"]))
    assert not store.location.exists(store.card_path("v1"))
    store.publish("v1", ValidationSummary(success=True, suite="s"))
    assert store.location.exists(store.card_path("v1"))
    # a version with no curation notes names no runs and still renders
    assert "No RAW runs are recorded" in store.location.read_bytes(store.card_path("v1")).decode()


def test_a_gone_run_record_is_named_not_fatal(product_store: ProductStore, tmp_path) -> None:
    manifest = product_store.store.get("v2")
    runs = card_lineage(RawStore(product_store.location), CropStore(product_store.location), manifest)
    assert [r.run_id for r in runs] == ["night-1", "night-2"]
    text = render_card(manifest, [runs[0], type(runs[1])("night-2", None)])
    assert "| `night-2` | (record gone) |" in text


def test_the_card_is_rewritten_by_the_cli_from_the_records(product_store: ProductStore, cli, monkeypatch) -> None:
    store = product_store.store
    path = store.card_path("v1")
    before = store.location.read_bytes(path)
    store.location.remove_file(path)
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", product_store.location.root)
    code, out, _ = cli("datasets", "card", "v1")
    assert code == 0 and path in out
    after = store.location.read_bytes(path)
    assert _front_matter(after.decode()) == _front_matter(before.decode())


@pytest.mark.parametrize(("rows", "bucket"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (237_250, "100K<n<1M")])
def test_size_category(rows: int, bucket: str) -> None:
    assert size_category(rows) == bucket


def test_a_card_reads_the_raw_shards_of_a_finished_run_once(product_store: ProductStore,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The downloads' verdicts of finished runs come from raw/_verdicts.json: a night's card does not
    reread every RAW shard the store has ever written (history-independent nights)."""
    from facescale.storage import RawStore
    from facescale.storage.raw import VERDICTS_INDEX

    store = product_store.store
    assert product_store.location.exists(product_store.location.path("raw", VERDICTS_INDEX))

    def read_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run's RAW shards were read again")

    monkeypatch.setattr(RawStore, "verdicts", read_again)
    path = store.write_card(store.get("v2"))
    assert "Downloads: 30 images stored, 2 results rejected." in product_store.location.read_bytes(path).decode()


def test_the_version_loads_through_its_card_with_images_and_named_labels(
    product_store: ProductStore, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets
    import PIL.Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    loaded = datasets.load_dataset(product_store.store.version_dir("v2"))["train"]  # README.md's configs + features
    assert loaded.features["label"].names == ["Ada Lovelace", "Alan Turing", "Grace Hopper"]
    assert isinstance(loaded[0]["image"], PIL.Image.Image)
    assert loaded.num_rows == product_store.store.get("v2").rows


def test_class_label_names_cover_every_label_up_to_the_highest(product_store: ProductStore) -> None:
    manifest = product_store.store.get("v2")
    moved = manifest.model_copy(update={"identities": [
        e.model_copy(update={"label": 3}) if e.label == 2 else e for e in manifest.identities]})
    assert label_names(moved, {2: "erased-2"}) == ["Ada Lovelace", "Alan Turing", "erased-2", "Grace Hopper"]
    assert label_names(moved) == ["Ada Lovelace", "Alan Turing", "label-2", "Grace Hopper"]
