"""Ingest a folder of photos (one sub-folder per identity) as a RAW run.

This is the offline source of RAW rows: the same contract as the scraper's output
(engine ``local``, ``source_url`` a file URI), so curation can run on any photo
collection. Each identity folder is one unit of work, committed with its rows, so an
interrupted ingest resumes where it stopped. Exact duplicates (same sha256) already stored
in any RAW run, or seen earlier in this one, become rejected rows with reason ``duplicate``;
bytes an erasure took out (`storage.erasure`) become rows with reason ``erased``, their bytes dropped.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facescale.errors import FacescaleError
from facescale.storage import IdentityRegistry, RawStore, RunRecord
from facescale.storage.erasures import ERASED, Blocklist

from .history import History
from .imagecheck import check_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}


@dataclass
class IngestSummary:
    run_id: str
    identities: int = 0
    skipped_identities: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def identity_folders(
    root: Path, min_images: int = 1, limit: int | None = None, max_images: int | None = None
) -> list[Path]:
    """Sub-folders of ``root`` with at least ``min_images`` (and at most ``max_images``) image files,
    sorted by name, the first ``limit`` of them."""
    if not root.is_dir():
        raise FacescaleError(f"not a directory: {root}")
    if max_images is not None and max_images < min_images:
        raise FacescaleError(f"max_images ({max_images}) is below min_images ({min_images})")
    folders = []
    for d in sorted(root.iterdir()):
        if d.is_dir():
            count = sum(1 for _ in _images(d))
            if count >= min_images and (max_images is None or count <= max_images):
                folders.append(d)
    return folders[:limit] if limit is not None else folders


def display_name(folder: Path) -> str:
    """``Ada_Lovelace`` -> ``Ada Lovelace`` (LFW and most photo dumps use underscores)."""
    return folder.name.replace("_", " ")


def ingest(
    root: Path,
    store: RawStore,
    registry: IdentityRegistry,
    run_id: str,
    *,
    min_images: int = 1,
    limit: int | None = None,
    max_images: int | None = None,
    max_pixels: int = 40_000_000,
    min_side: int = 48,
    commit_rows: int = 1024,
    on_folder: Callable[[str], None] | None = None,
    erasures: Blocklist | None = None,
) -> IngestSummary:
    """Ingest ``root`` into RAW run ``run_id`` (resuming it if it was interrupted).

    Whole folders are committed together once ``commit_rows`` rows are buffered, so a
    crash costs at most that much work and shards stay a useful size.
    """
    folders = identity_folders(root, min_images, limit, max_images)
    if not folders:
        most = f" and <= {max_images}" if max_images is not None else ""
        raise FacescaleError(f"no identity folders with >= {min_images}{most} images under {root}")
    summary = IngestSummary(run_id)
    if store.exists(run_id) and store.get(run_id).finished:
        log.info("run %s already finished", run_id)
        return _summarise(store, store.get(run_id), summary)
    identities = {i.name: i for i, _ in registry.add(display_name(f) for f in folders)}
    seen = History.load(store).image_ids
    erased = set(erasures.image_ids) if erasures is not None else set()
    with store.open(run_id, meta={"source": str(root), "engine": "local"}) as writer:
        pending_units: list[str] = []
        pending_rows = 0
        for folder in folders:
            identity = identities[display_name(folder)]
            if writer.is_completed(identity.slug):
                summary.skipped_identities += 1
            else:
                rows = list(_rows(folder, identity.name, identity.slug, run_id, seen, erased, max_pixels, min_side))
                writer.write(rows)
                pending_units.append(identity.slug)
                pending_rows += len(rows)
                if pending_rows >= commit_rows:  # rows and their folders become durable together
                    writer.commit(pending_units)
                    pending_units, pending_rows = [], 0
            if on_folder:
                on_folder(identity.name)
        record = writer.commit(pending_units, finished=True)
    return _summarise(store, record, summary)


def _rows(
    folder: Path, name: str, slug: str, run_id: str, seen: set[str], erased: set[str], max_pixels: int, min_side: int
) -> Iterator[dict[str, Any]]:
    for rank, path in enumerate(_images(folder)):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        check = check_image(data, max_pixels=max_pixels, min_side=min_side)
        error = check.error or (ERASED if digest in erased else "duplicate" if digest in seen else None)
        if error is None:
            seen.add(digest)
        yield {
            "image_id": digest if data else None,
            "run_id": run_id,
            "identity": name,
            "identity_slug": slug,
            "keyword": name,
            "engine": "local",
            "source_url": path.resolve().as_uri(),
            "page_url": None,
            "rank": rank,
            "fetched_at": datetime.now(UTC),
            "http_status": None,
            "content_type": check.content_type,
            "image": data if error is None else None,
            "width": check.width,
            "height": check.height,
            "error": error,
        }


def _images(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _summarise(store: RawStore, record: RunRecord, summary: IngestSummary) -> IngestSummary:
    """Fill ``summary`` from what the run has committed (accepted rows, rejections by reason)."""
    summary.identities = len(record.completed)
    summary.accepted, rejected = store.verdicts([record.run_id])
    summary.rejected.update(rejected)
    return summary
