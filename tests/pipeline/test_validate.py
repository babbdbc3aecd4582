"""validate: the GX gate publishes a consistent version; each broken property fails it, named in a line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from facescale.errors import FacescaleError, NotFoundError
from facescale.pipeline.validate import DATA_DOCS_DIR, RESULT_FILE, SUITE_NAME, validate_version
from facescale.storage import DatasetStore, IdentityEntry, Location, ValidationSummary

SIZE = 32
IDENTITIES = (("Ada Lovelace", "ada-lovelace", 0), ("Alan Turing", "alan-turing", 1))
# 10 source photos per identity: 7 train (x3 augmentation), 2 val, 1 test -> 21/2/1 rows
CONFIG = {"per_identity": 10, "augment_factor": 3, "split": {"train": 0.7, "val": 0.2, "test": 0.1}, "crop_size": SIZE}

Rows = list[dict[str, Any]]


def jpeg(seed: int, size: int = SIZE) -> bytes:
    """A real JPEG crop of random pixels (distinct for distinct seeds)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", pixels)
    assert ok
    return data.tobytes()


def make_rows() -> Rows:
    """A consistent version's rows: per identity, 10 sources split 7/2/1, train augmented x3."""
    rows: Rows = []
    for name, slug, label in IDENTITIES:
        for j in range(10):
            split = "train" if j < 7 else "val" if j < 9 else "test"
            source = hashlib.sha256(f"{slug}/{j}".encode()).hexdigest()
            for k in range(3 if split == "train" else 1):
                rows.append(
                    {
                        "sample_id": f"{source[:16]}-{k}",
                        "source_image_id": source,
                        "identity": name,
                        "identity_slug": slug,
                        "label": label,
                        "split": split,
                        "aug_index": k,
                        "face_box": {"x": 4, "y": 4, "w": 24, "h": 24},
                        "image": jpeg(len(rows)),
                        "width": SIZE,
                        "height": SIZE,
                        "sharpness": 10.0,
                        "brightness": 120.0,
                        "contrast": 30.0,
                    }
                )
    return rows


def entries(rows: Rows) -> list[IdentityEntry]:
    """The identity table that matches ``rows`` exactly."""
    result = []
    for name, slug, label in IDENTITIES:
        counts = {
            s: sum(1 for r in rows if r["identity_slug"] == slug and r["split"] == s) for s in ("train", "val", "test")
        }
        result.append(IdentityEntry(name=name, slug=slug, label=label, counts=counts, sources=10))
    return result


def first(rows: Rows, **where: Any) -> dict[str, Any]:
    return next(r for r in rows if all(r[k] == v for k, v in where.items()))


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(Location.from_uri(str(tmp_path / "store")))


Commit = Callable[..., str]


@pytest.fixture
def commit(store: DatasetStore) -> Commit:
    """Commit ``rows`` as a new version (identity table from the rows unless given)."""

    def _commit(rows: Rows, identities: list[IdentityEntry] | None = None) -> str:
        writer = store.create(config=CONFIG)
        writer.write(rows)
        writer.commit(identities=identities if identities is not None else entries(rows), notes={"test": True})
        return writer.version_id

    return _commit


def shard_digests(store: DatasetStore, version_id: str) -> dict[str, str]:
    fs = store.location.fs
    return {p: hashlib.sha256(fs.cat_file(p)).hexdigest() for p in store.shard_paths(store.get(version_id))}


def check_failed(store: DatasetStore, version_id: str, expected: str, *, alone: bool = True) -> ValidationSummary:
    """Validate; the version must fail with a line containing ``expected`` and stay unpublished."""
    before = shard_digests(store, version_id)
    summary = validate_version(store, version_id)
    assert not summary.success
    assert any(expected in line for line in summary.failures), summary.failures
    if alone:
        assert len(summary.failures) == 1, summary.failures
    manifest = store.get(version_id)
    assert not manifest.published
    assert manifest.validation is not None
    assert manifest.validation.failures == summary.failures
    assert shard_digests(store, version_id) == before
    store.verify(version_id)
    return summary


def test_consistent_version_passes_and_is_published(store: DatasetStore, commit: Commit) -> None:
    version = commit(make_rows())
    before = shard_digests(store, version)

    summary = validate_version(store, version)

    assert summary.success, summary.failures
    assert summary.suite == SUITE_NAME
    assert summary.failures == []
    stats = summary.statistics
    assert stats["rows"] == 48
    assert stats["identities"] == 2
    assert stats["split_rows"] == {"train": 42, "val": 4, "test": 2}
    assert stats["duplicate_rate"] == 0.0
    assert stats["evaluated_expectations"] == stats["successful_expectations"] >= 25
    manifest = store.get(version)
    assert manifest.published
    assert manifest.validation == summary
    assert summary.data_docs == f"{DATA_DOCS_DIR}/index.html"
    base = Path(store.version_dir(version))
    index = base / summary.data_docs
    assert index.is_file()
    assert "facescale_curated" in index.read_text(encoding="utf-8")
    pages = list((base / DATA_DOCS_DIR / "validations").rglob("*.html"))
    assert len(pages) == 3  # schema, rows and counts
    raw = json.loads((base / RESULT_FILE).read_text(encoding="utf-8"))
    assert raw["success"] is True
    assert set(raw["results"]) == {f"{SUITE_NAME}.schema", f"{SUITE_NAME}.rows", f"{SUITE_NAME}.counts"}
    assert shard_digests(store, version) == before


def test_source_photo_in_two_splits(store: DatasetStore, commit: Commit) -> None:
    rows = make_rows()
    train_source = first(rows, split="train")["source_image_id"]
    first(rows, split="val")["source_image_id"] = train_source
    summary = check_failed(store, commit(rows), "source_image_id must be in one split only")
    assert train_source in summary.failures[0]


def test_counts_differ_from_manifest(store: DatasetStore, commit: Commit) -> None:
    rows = make_rows()
    identities = entries(rows)
    identities[1] = identities[1].model_copy(update={"counts": {"train": 21, "val": 3, "test": 1}})
    summary = check_failed(store, commit(rows, identities), "must equal the manifest's identity counts")
    assert "identity_slug=alan-turing split=val observed=2 expected=3" in summary.failures[0]


def test_train_count_below_the_configured_target(store: DatasetStore, commit: Commit) -> None:
    rows = make_rows()
    dropped = first(rows, identity_slug="ada-lovelace", split="train")["source_image_id"]
    rows = [r for r in rows if r["source_image_id"] != dropped]  # manifest counts follow the rows
    summary = check_failed(store, commit(rows), "train rows per identity must be 21")
    assert "identity_slug=ada-lovelace observed=18" in summary.failures[0]


def test_image_decodes_to_another_size(store: DatasetStore, commit: Commit) -> None:
    rows = make_rows()
    first(rows, split="test")["image"] = jpeg(999, size=SIZE + 8)
    summary = check_failed(store, commit(rows), "decode to its stated width", alone=False)
    assert any("decode to its stated height" in line for line in summary.failures)
    assert f"decoded_width={SIZE + 8} width={SIZE}" in " ".join(summary.failures)


def test_undecodable_images(store: DatasetStore, commit: Commit) -> None:
    rows = make_rows()
    garbage = first(rows, split="train", aug_index=2)
    garbage["image"] = b"not an image at all"
    truncated = first(rows, split="val")
    truncated["image"] = truncated["image"][: len(truncated["image"]) // 2]
    summary = check_failed(store, commit(rows), "image must decode (image_decodes = 1): 2 of 48 rows fail", alone=False)
    line = next(f for f in summary.failures if f.startswith("image must decode (image_decodes = 1)"))
    assert garbage["sample_id"] in line
    assert truncated["sample_id"] in line
    assert summary.statistics["undecodable_images"] == 2


def test_duplicated_sample_id(store: DatasetStore, commit: Commit) -> None:
    rows = make_rows()
    rows[5]["sample_id"] = rows[4]["sample_id"]
    summary = check_failed(store, commit(rows), "sample_id must be unique")
    assert "2 of 48 rows" in summary.failures[0]
    assert rows[4]["sample_id"] in summary.failures[0]


def test_augmented_val_row(store: DatasetStore, commit: Commit) -> None:
    rows = make_rows()
    row = first(rows, split="val")
    row["aug_index"] = 1
    row["sample_id"] = row["sample_id"][:-1] + "1"
    summary = check_failed(store, commit(rows), "aug_index must be 0 in val and test")
    assert f"sample_id={row['sample_id']}" in summary.failures[0]


def test_label_not_matching_the_manifest(store: DatasetStore, commit: Commit) -> None:
    rows = make_rows()
    row = first(rows, identity_slug="alan-turing", split="test")
    row["label"] = 0  # Ada's label, still within range
    summary = check_failed(store, commit(rows), "label must be the manifest's label for the row's identity_slug")
    assert "identity_slug=alan-turing label=0 manifest_label=1" in summary.failures[0]


def test_duplicate_originals_above_the_allowed_rate(store: DatasetStore, commit: Commit) -> None:
    rows = make_rows()
    originals = [r for r in rows if r["aug_index"] == 0]
    originals[1]["image"] = originals[0]["image"]  # 2 of 20 originals share bytes: 10%
    copies = [r for r in rows if r["aug_index"] > 0]
    copies[1]["image"] = copies[0]["image"]  # augmented copies do not count
    version = commit(rows)

    summary = check_failed(store, version, "image_sha256 must repeat in at most 0.00% of the originals")
    assert "2 of 20 rows fail (10.00%)" in summary.failures[0]
    assert originals[0]["source_image_id"] in summary.failures[0]
    assert summary.statistics["duplicate_rate"] == pytest.approx(0.1)

    allowed = validate_version(store, version, max_duplicate_rate=0.1)
    assert allowed.success, allowed.failures
    assert store.get(version).published


def test_damaged_shard_fails_without_raising(store: DatasetStore, commit: Commit) -> None:
    version = commit(make_rows())
    (shard,) = store.shard_paths(store.get(version))
    data = bytearray(Path(shard).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(shard).write_bytes(bytes(data))

    summary = validate_version(store, version)

    assert not summary.success
    assert summary.failures[0].startswith("shards: shard checksum mismatch")
    assert not store.get(version).published


def test_publish_false_records_nothing(store: DatasetStore, commit: Commit) -> None:
    rows = make_rows()
    rows[1]["sample_id"] = rows[0]["sample_id"]
    version = commit(rows)
    summary = validate_version(store, version, publish=False)
    assert not summary.success
    manifest = store.get(version)
    assert manifest.validation is None
    assert not manifest.published
    assert (Path(store.version_dir(version)) / summary.data_docs).is_file()


def test_unknown_version_raises_not_found(store: DatasetStore) -> None:
    with pytest.raises(NotFoundError):
        validate_version(store, "no-such-version")
    assert issubclass(NotFoundError, FacescaleError)


@pytest.fixture
def memory_store() -> Iterator[DatasetStore]:
    location = Location.from_uri(f"memory://facescale-validate-{uuid.uuid4().hex}")
    yield DatasetStore(location)
    if location.fs.exists(location.root):
        location.fs.rm(location.root, recursive=True)


def test_data_docs_on_a_remote_store(memory_store: DatasetStore) -> None:
    rows = make_rows()
    writer = memory_store.create(config=CONFIG)
    writer.write(rows)
    writer.commit(identities=entries(rows))
    summary = validate_version(memory_store, writer.version_id)
    assert summary.success, summary.failures
    base = memory_store.version_dir(writer.version_id)
    fs = memory_store.location.fs
    assert fs.exists(f"{base}/{summary.data_docs}")
    assert fs.exists(f"{base}/{RESULT_FILE}")
    assert memory_store.get(writer.version_id).published


def test_importing_the_module_does_not_import_great_expectations() -> None:
    code = (
        "import sys, facescale.pipeline.validate\n"
        "heavy = [m for m in ('great_expectations', 'cv2', 'pandas') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_child_version_takes_the_sizes_of_its_parents_images_from_the_parents_validation(
    store: DatasetStore, commit: Commit
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from facescale.pipeline.validate import DECODED_FILE, decoded_sizes

    parent = commit(make_rows())
    assert validate_version(store, parent).success
    sizes = decoded_sizes(store, parent)
    digests = {hashlib.sha256(r["image"]).hexdigest() for r in make_rows()}
    assert set(sizes) == digests and set(sizes.values()) == {(SIZE, SIZE)}

    # The child holds the same images. What its validation believes of them is the parent's
    # record, not a decode: a record that lies about one image's width fails the child on it.
    facts = Path(store.location.path(parent, DECODED_FILE))
    table = pq.read_table(facts)
    widths = table.column("width").to_pylist()
    widths[0] = SIZE + 1
    pq.write_table(table.set_column(1, "width", pa.array(widths, pa.int32())), facts)
    child = commit(make_rows())
    assert store.get(child).parent == parent
    summary = validate_version(store, child, publish=False)
    assert any("decode to its stated width" in line for line in summary.failures), summary.failures

    # an unpublished parent's record is not trusted: everything is decoded again
    orphan = commit(make_rows())  # its parent is the unpublished child
    assert decoded_sizes(store, child) == {} and validate_version(store, orphan).success
