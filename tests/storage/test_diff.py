"""diff: identities added / removed / changed between versions, photos per identity with reasons, labels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from facescale.storage import DatasetStore, Location
from facescale.storage.diff import NOT_SELECTED, diff_versions

from .conftest import ProductStore, curated_row, identity_entries


def _source(image: bytes) -> str:
    return hashlib.sha256(image).hexdigest()


def test_a_night_that_adds_an_identity_and_takes_a_photo_down(product_store: ProductStore) -> None:
    from facescale.storage import ExclusionList

    diff = diff_versions(product_store.store, "v1", "v2", ExclusionList(product_store.location))
    v2 = product_store.store.get("v2")
    assert diff.identities_added == {"grace-hopper": next(e.total for e in v2.identities if e.slug == "grace-hopper")}
    assert diff.identities_removed == {}
    assert diff.identities_unchanged == 1  # Alan: the same photos, the same counts
    (ada,) = diff.identities_changed
    assert ada.slug == "ada-lovelace" and ada.photos_added == []
    photos = product_store.photos["ada-lovelace"]
    assert ada.photos_removed == {_source(photos[0]): "takedown", _source(photos[9]): NOT_SELECTED}
    assert ada.removed_reasons == {"takedown": 1, NOT_SELECTED: 1}
    assert sum(ada.counts_after.values()) < sum(ada.counts_before.values())
    assert diff.label_changes == []
    assert (diff.samples_before, diff.samples_after) == (product_store.store.get("v1").rows, v2.rows)


def test_the_reverse_diff_mirrors_it(product_store: ProductStore) -> None:
    diff = diff_versions(product_store.store, "v2", "v1")
    assert list(diff.identities_removed) == ["grace-hopper"] and diff.identities_added == {}
    (ada,) = diff.identities_changed
    assert len(ada.photos_added) == 2 and ada.photos_removed == {}


def test_a_version_against_itself_has_no_changes(product_store: ProductStore) -> None:
    diff = diff_versions(product_store.store, "v2", "v2")
    assert not (diff.identities_added or diff.identities_removed or diff.identities_changed or diff.label_changes)
    assert diff.identities_unchanged == 3


def test_a_changed_label_is_reported(tmp_path: Path) -> None:
    store = DatasetStore(Location.from_uri(str(tmp_path)))
    rows = [curated_row(i) for i in range(8)]
    entries = identity_entries(rows)
    for version, table in (("a", entries), ("b", [entries[0], entries[1].model_copy(update={"label": 7})])):
        with store.create(version, parent=None) as writer:
            writer.write(rows)
            writer.commit(table)
    diff = diff_versions(store, "a", "b")
    assert [(c.slug, c.before, c.after) for c in diff.label_changes] == [("alan-turing", 1, 7)]


def test_the_cli_prints_a_table_and_json(product_store: ProductStore, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", product_store.location.root)
    code, out, err = cli("datasets", "diff", "v1", "latest")
    assert code == 0, err
    assert "v1 -> v2" in out and "identities +1 -0 changed 1, unchanged 1; label changes 0" in out
    assert "takedown 1" in out and "not_selected 1" in out
    code, out, _ = cli("datasets", "diff", "v1", "v2", "--json")
    data = json.loads(out)
    assert data["identities_added"] == {"grace-hopper": 7 * 3 + 2 + 1}
    removed = data["identities_changed"][0]["photos_removed"]
    assert removed[_source(product_store.photos["ada-lovelace"][0])] == "takedown"
    assert "unknown dataset version 'v9'" in cli("datasets", "diff", "v1", "v9").single_error_line()
