"""Storage fixtures: tiny real JPEGs, valid RAW/CURATED rows, local and in-memory roots.

The row builders are plain functions so that the child writer process
(``_writer_proc.py``, run as a script from this folder) builds the very same rows.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image

from facescale.storage import (
    CropStore,
    DatasetStore,
    Exclusion,
    ExclusionList,
    IdentityEntry,
    Location,
    RawStore,
    ShardSizing,
    ValidationSummary,
    chunk_id,
    raw_shard_key,
)

WRITER_PROC = Path(__file__).with_name("_writer_proc.py")

COLOURS = ((220, 20, 60), (34, 139, 34), (30, 144, 255), (255, 215, 0))
IDENTITIES = (("Ada Lovelace", "ada-lovelace"), ("Alan Turing", "alan-turing"))
FETCHED_AT = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


def jpeg_bytes(colour: tuple[int, int, int], size: int = 32) -> bytes:
    """A real JPEG of one solid colour, encoded in-process."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


JPEGS = tuple(jpeg_bytes(c) for c in COLOURS)


def raw_row(i: int, run_id: str = "run-1", *, rejected: bool = False) -> dict[str, Any]:
    """A valid RAW row; ``rejected`` rows carry no image and a reason code."""
    name, slug = IDENTITIES[i % len(IDENTITIES)]
    image = None if rejected else JPEGS[i % len(JPEGS)]
    return {
        "image_id": None if image is None else hashlib.sha256(image).hexdigest(),
        "run_id": run_id,
        "identity": name,
        "identity_slug": slug,
        "keyword": f"{name} portrait",
        "engine": "local",
        "source_url": f"http://127.0.0.1/img/{run_id}/{i:05d}.jpg",
        "page_url": f"http://127.0.0.1/search?q={slug}",
        "rank": i,
        "fetched_at": FETCHED_AT + timedelta(seconds=i),
        "http_status": 404 if rejected else 200,
        "content_type": None if rejected else "image/jpeg",
        "image": image,
        "width": None if rejected else 32,
        "height": None if rejected else 32,
        "error": "http_status" if rejected else None,
    }


def curated_row(i: int) -> dict[str, Any]:
    """A valid CURATED row (every field filled, quality metrics included)."""
    name, slug = IDENTITIES[i % len(IDENTITIES)]
    image = JPEGS[i % len(JPEGS)]
    source = hashlib.sha256(b"source-%d" % (i // 2)).hexdigest()
    return {
        "sample_id": f"{source[:16]}-{i % 2}-{i:05d}",
        "source_image_id": source,
        "identity": name,
        "identity_slug": slug,
        "label": i % len(IDENTITIES),
        "split": ("train", "train", "val", "test")[i % 4],
        "aug_index": i % 2,
        "face_box": {"x": i % 7, "y": i % 5, "w": 20, "h": 24},
        "image": image,
        "width": 32,
        "height": 32,
        "sharpness": float(i) + 0.5,
        "brightness": 128.0,
        "contrast": 12.25,
    }


def identity_entries(rows: list[dict[str, Any]]) -> list[IdentityEntry]:
    """The identity table a version of ``rows`` records."""
    entries = []
    for label, (name, slug) in enumerate(IDENTITIES):
        counts: dict[str, int] = {}
        for row in rows:
            if row["label"] == label:
                counts[row["split"]] = counts.get(row["split"], 0) + 1
        entries.append(IdentityEntry(name=name, slug=slug, label=label, counts=counts))
    return entries


def row_groups(location: Location, path: str) -> list[int]:
    """Row counts of the row groups of one stored Parquet file."""
    with location.fs.open(path, "rb") as fh:
        meta = pq.ParquetFile(fh).metadata
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def stored_files(location: Location) -> list[str]:
    """Every file under the location's root (relative paths), sorted."""
    if not location.fs.exists(location.root):
        return []
    prefix = location.root.rstrip("/") + "/"
    return sorted(p.removeprefix(prefix) for p in location.fs.find(location.root))


@pytest.fixture
def jpegs() -> tuple[bytes, ...]:
    return JPEGS


@pytest.fixture
def make_raw_row() -> Callable[..., dict[str, Any]]:
    return raw_row


@pytest.fixture
def make_curated_row() -> Callable[[int], dict[str, Any]]:
    return curated_row


@pytest.fixture
def identities_for() -> Callable[[list[dict[str, Any]]], list[IdentityEntry]]:
    return identity_entries


@pytest.fixture
def files_under() -> Callable[[Location], list[str]]:
    return stored_files


@pytest.fixture
def row_groups_of() -> Callable[[Location, str], list[int]]:
    return row_groups


@pytest.fixture(scope="session")
def writer_proc() -> Path:
    """The helper script that writes (and may kill itself) in a child process."""
    return WRITER_PROC


@pytest.fixture
def local_location(tmp_path: Path) -> Location:
    return Location.from_uri(str(tmp_path / "store"))


@pytest.fixture
def memory_location() -> Iterator[Location]:
    """A fresh root on fsspec's (process-global) memory filesystem, removed afterwards."""
    location = Location.from_uri(f"memory://facescale-test-{uuid.uuid4().hex}")
    yield location
    if location.fs.exists(location.root):
        location.fs.rm(location.root, recursive=True)


@pytest.fixture(params=["local", "memory"])
def location(request: pytest.FixtureRequest) -> Location:
    """The same tests on a local directory and on an fsspec (non-local) filesystem."""
    return request.getfixturevalue(f"{request.param}_location")


# -- a store with two published versions (the dataset-product tests: card, export, diff) --------
PRODUCT_PEOPLE = (
    ("Ada Lovelace", "ada-lovelace", 0), ("Alan Turing", "alan-turing", 1), ("Grace Hopper", "grace-hopper", 2)
)
AUGMENT = 3  # samples per train photo, the original included


@dataclass
class ProductStore:
    """Two published versions of real photos: ``v1`` (Ada, Alan), ``v2`` (+ Grace; one Ada photo taken down)."""

    location: Location
    store: DatasetStore
    photos: dict[str, list[bytes]]  # slug -> the photo bytes, by index
    taken_down: str  # the source_image_id of Ada's photo that v2 leaves out


def _split(j: int) -> str:
    return "train" if j % 10 < 7 else "val" if j % 10 < 9 else "test"


def product_rows(people: dict[str, list[bytes]]) -> list[dict[str, Any]]:
    """CURATED rows of real photos: per identity its photos split 7/2/1 by source, train photos x AUGMENT."""
    rows = []
    names = {slug: (name, label) for name, slug, label in PRODUCT_PEOPLE}
    for slug, photos in people.items():
        name, label = names[slug]
        for j, image in enumerate(photos):
            source = hashlib.sha256(image).hexdigest()
            split = _split(j)
            for k in range(AUGMENT if split == "train" else 1):
                rows.append({
                    "sample_id": f"{source[:16]}-{k}", "source_image_id": source, "identity": name,
                    "identity_slug": slug, "label": label, "split": split, "aug_index": k,
                    "face_box": {"x": 60, "y": 60, "w": 130, "h": 130}, "image": image, "width": 250, "height": 250,
                    "sharpness": 50.0, "brightness": 120.0, "contrast": 40.0,
                })
    return rows


def product_version(
    store: DatasetStore, version_id: str, rows: list[dict[str, Any]], *, parent: str | None, chunks: list[str],
    rejected: dict[str, int],
) -> None:
    entries = []
    for name, slug, label in PRODUCT_PEOPLE:
        mine = [r for r in rows if r["identity_slug"] == slug]
        if mine:
            counts = {s: sum(1 for r in mine if r["split"] == s) for s in ("train", "val", "test")}
            sources = len({r["source_image_id"] for r in mine})
            entries.append(IdentityEntry(name=name, slug=slug, label=label, counts=counts, sources=sources))
    config = {"per_identity": 10, "augment_factor": AUGMENT, "split": {"train": 0.7, "val": 0.2, "test": 0.1},
              "min_per_identity": 5, "cleaning_threshold": 0.6, "crop_size": 250}
    notes = {"curation": {"chunks": chunks, "rejected": rejected}}
    with store.create(version_id, parent=parent, config=config) as writer:
        writer.write(rows)
        writer.commit(entries, notes=notes)
    summary = ValidationSummary(
        success=True, suite="facescale_curated",
        statistics={"evaluated_expectations": 29, "successful_expectations": 29},
        data_docs="validation/data_docs/index.html",
    )
    store.publish(version_id, summary)


def raw_night(location: Location, run_id: str, people: dict[str, list[bytes]]) -> str:
    """A finished RAW run of these photos (engine ``demo``) and the crop chunk that covers it; returns the chunk id."""
    raw = RawStore(location)
    with raw.open(run_id, meta={"engine": "demo", "per_keyword": 20}) as writer:
        i = 0
        for slug, photos in people.items():
            for image in photos:
                row = raw_row(i, run_id)
                row.update(image=image, image_id=hashlib.sha256(image).hexdigest(), identity_slug=slug,
                           engine="demo", width=250, height=250)
                writer.write([row])
                i += 1
        writer.write([raw_row(i, run_id, rejected=True)])  # a result the downloader rejected (HTTP 404)
        record = writer.commit(list(people), finished=True)
    keys = [raw_shard_key(run_id, s) for s in record.shards]
    chunk = chunk_id("params", keys)
    with CropStore(location).open(chunk, "params", keys) as chunk_writer:
        chunk_writer.commit()
    return chunk


@pytest.fixture(scope="module")
def product_store(lfw_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> ProductStore:
    folders = {"ada-lovelace": "Jiang_Zemin", "alan-turing": "Paul_Bremer", "grace-hopper": "Naomi_Watts"}
    photos = {slug: [p.read_bytes() for p in sorted((lfw_dev / folder).glob("*.jpg"))[:10]]
              for slug, folder in folders.items()}
    location = Location.from_uri(str(tmp_path_factory.mktemp("product") / "store"))
    store = DatasetStore(location, ShardSizing(rows_per_row_group=8, max_rows_per_shard=16))
    night1 = {s: photos[s] for s in ("ada-lovelace", "alan-turing")}
    chunk1 = raw_night(location, "night-1", night1)
    product_version(store, "v1", product_rows(night1), parent=None, chunks=[chunk1], rejected={"no_face": 3})
    # night 2: Grace arrives; Ada's photo 0 is taken down (the exclusion list says why) and photo 9 is gone too
    taken_down = hashlib.sha256(photos["ada-lovelace"][0]).hexdigest()
    takedown = Exclusion(identity_slug="ada-lovelace", source_image_id=taken_down, reason="takedown")
    ExclusionList(location).add([takedown])
    chunk2 = raw_night(location, "night-2", {"grace-hopper": photos["grace-hopper"]})
    night2 = {"ada-lovelace": photos["ada-lovelace"][1:9], "alan-turing": photos["alan-turing"],
              "grace-hopper": photos["grace-hopper"]}
    product_version(store, "v2", product_rows(night2), parent="v1", chunks=[chunk1, chunk2],
                    rejected={"no_face": 4, "wrong_person": 2, "multiple_faces": 1})
    return ProductStore(location, store, photos, taken_down)
