"""Storage fixtures: tiny real JPEGs, valid RAW/CURATED rows, local and in-memory roots.

The row builders are plain functions so that the child writer process
(``_writer_proc.py``, run as a script from this folder) builds the very same rows.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from PIL import Image

from facescale.storage import IdentityEntry, Location

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
