"""A store holding three people in every place an erasure must reach (the erasure tests' fixture).

RAW runs of two nights (a rejection and one photo of Ada filed under Alan too), the crop cache
with perceptual keys and embeddings, two versions (v1 unpublished, v2 published with its card
and the gate's ``decoded.parquet``), a model on v2 (labels, a dlib gallery with photo ids, a
model gallery saved before galleries kept ids, plots, metrics naming people), exclusions, a
stored plan, contact sheets and an export.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from facescale.storage import (
    CropStore,
    Exclusion,
    IdentityEntry,
    Location,
    ShardSizing,
    StorageRoot,
    ValidationSummary,
    chunk_id,
    raw_shard_key,
)
from facescale.storage.export import export_version
from facescale.storage.schemas import EMBEDDING_DIM, HASH_BYTES

PEOPLE = (("Ada Lovelace", "ada-lovelace", "Jiang_Zemin"), ("Alan Turing", "alan-turing", "Paul_Bremer"),
          ("Grace Hopper", "grace-hopper", "Naomi_Watts"))
SIZING = ShardSizing(rows_per_row_group=4, max_rows_per_shard=5)
PHOTOS = 6
AT = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass
class ErasureStore:
    root: StorageRoot
    photos: dict[str, list[bytes]]  # slug -> photo bytes
    model_id: str
    export_dir: Path

    def image_id(self, slug: str, i: int) -> str:
        return hashlib.sha256(self.photos[slug][i]).hexdigest()

    def url(self, slug: str, i: int) -> str:
        return f"http://images.example/{slug}/{i}.jpg"


def _raw_row(run_id: str, name: str, slug: str, i: int, image: bytes | None, url: str) -> dict[str, Any]:
    return {
        "image_id": None if image is None else hashlib.sha256(image).hexdigest(), "run_id": run_id,
        "identity": name, "identity_slug": slug, "keyword": name, "engine": "demo", "source_url": url,
        "page_url": f"http://search.example/?q={slug}", "rank": i, "fetched_at": AT + timedelta(seconds=i),
        "http_status": 200 if image else 404, "content_type": "image/jpeg" if image else None, "image": image,
        "width": 250 if image else None, "height": 250 if image else None, "error": None if image else "http_status",
    }


def _crop_row(raw: dict[str, Any]) -> dict[str, Any]:
    seed = int(raw["image_id"][:8], 16)
    vector = np.random.default_rng(seed).normal(size=EMBEDDING_DIM).astype(np.float32)
    return {
        "image_id": raw["image_id"], "run_id": raw["run_id"], "identity": raw["identity"],
        "identity_slug": raw["identity_slug"], "error": None, "crop": raw["image"],
        "face_box": {"x": 60, "y": 60, "w": 130, "h": 130}, "sharpness": 50.0, "brightness": 120.0,
        "contrast": 40.0, "faces": 1, "phash": hashlib.sha256(raw["image"]).digest()[:HASH_BYTES],
        "phash_windows": None, "embedding": vector.tolist(),
    }


def _night(root: StorageRoot, run_id: str, rows: list[dict[str, Any]]) -> str:
    with root.raw.open(run_id, meta={"engine": "demo"}) as writer:
        writer.write(rows)
        record = writer.commit(sorted({r["identity"] for r in rows}), finished=True)
    keys = [raw_shard_key(run_id, s) for s in record.shards]
    chunk = chunk_id("params", keys)
    crops = CropStore(root.location, SIZING)
    with crops.open(chunk, "params", keys) as chunk_writer:
        chunk_writer.write([_crop_row(r) for r in rows if r["image"] is not None])
        chunk_writer.commit()
    return chunk


def _version(root: StorageRoot, version_id: str, people: dict[str, list[bytes]], labels: dict[str, int],
             *, parent: str | None, chunks: list[str], publish: bool) -> None:
    rows = []
    names = {slug: name for name, slug, _ in PEOPLE}
    for slug, photos in people.items():
        for j, image in enumerate(photos):
            source = hashlib.sha256(image).hexdigest()
            split = "train" if j < 4 else "val" if j == 4 else "test"
            for k in range(2 if split == "train" else 1):
                data = image if k == 0 else image + b"\0aug"  # an augmented copy: other bytes
                rows.append({
                    "sample_id": f"{source[:16]}-{k}", "source_image_id": source, "identity": names[slug],
                    "identity_slug": slug, "label": labels[slug], "split": split, "aug_index": k,
                    "face_box": {"x": 60, "y": 60, "w": 130, "h": 130}, "image": data, "width": 250,
                    "height": 250, "sharpness": 50.0, "brightness": 120.0, "contrast": 40.0,
                })
    entries = []
    for slug in people:
        mine = [r for r in rows if r["identity_slug"] == slug]
        counts = {s: sum(r["split"] == s for r in mine) for s in ("train", "val", "test")}
        entries.append(IdentityEntry(name=names[slug], slug=slug, label=labels[slug], counts=counts,
                                     sources=len({r["source_image_id"] for r in mine})))
    notes = {"curation": {"chunks": chunks, "identities": {}, "waiting": {}, "rejected": {}}}
    notes["curation"]["identities"] = {
        slug: {"status": "kept", "fingerprint": "f", "reused": False} for slug in people}
    if "grace-hopper" not in people:  # v1: Grace waits for photos (a note, no samples)
        notes["curation"]["waiting"] = {"grace-hopper": {"status": "waiting", "candidates": 1, "needed": 4}}
    store = root.datasets
    with store.create(version_id, parent=parent, config={"per_identity": 6}) as writer:
        writer.write(rows)
        writer.commit(entries, notes=notes)
    decoded = pa.table({
        "sha256": pa.array([hashlib.sha256(r["image"]).digest() for r in rows], pa.binary(32)),
        "width": pa.array([250] * len(rows), pa.int32()), "height": pa.array([250] * len(rows), pa.int32()),
    })
    buffer = io.BytesIO()
    pq.write_table(decoded, buffer)
    store.location.write_bytes_atomic(store.location.path(version_id, "validation", "decoded.parquet"),
                                      buffer.getvalue())
    gate = {"results": [{"expectation_config": {"type": "expect_column_values_to_be_in_set",
                                                "kwargs": {"column": "identity_slug", "value_set": sorted(people)}}}]}
    store.location.write_bytes_atomic(store.location.path(version_id, "validation", "result.json"),
                                      json.dumps(gate).encode())
    if publish:
        store.publish(version_id, ValidationSummary(success=True, suite="facescale_curated"))


def _model(root: StorageRoot, work: Path, version_id: str, labels: dict[str, int],
           ids_of: dict[str, list[str]]) -> str:
    names = {slug: name for name, slug, _ in PEOPLE}
    files = work / "model"
    (files / "eval").mkdir(parents=True)
    (files / "calibration").mkdir()
    (files / "model.keras").write_bytes(b"weights")
    (files / "labels.json").write_text(json.dumps({
        "version_id": version_id, "num_classes": 3,
        "labels": {str(label): {"name": names[slug], "slug": slug} for slug, label in labels.items()},
    }, indent=2))
    rng = np.random.default_rng(0)
    gallery_labels = [labels[s] for s in ids_of for _ in ids_of[s]]
    gallery_ids = [i for s in ids_of for i in ids_of[s]]
    np.savez_compressed(files / "calibration" / "gallery-dlib.npz", labels=np.array(gallery_labels),
                        embeddings=rng.normal(size=(len(gallery_ids), 8)).astype(np.float32),
                        ids=np.array(gallery_ids, str))
    np.savez_compressed(files / "calibration" / "gallery-model.npz", labels=np.array(gallery_labels),
                        embeddings=rng.normal(size=(len(gallery_ids), 8)).astype(np.float32))
    (files / "calibration" / "report.json").write_text(json.dumps(
        {"per_identity": {slug: {"name": names[slug], "right": 1.0} for slug in labels}}))
    (files / "eval" / "metrics.json").write_text(json.dumps({"confused_pairs": [
        {"true": {"label": 0, "name": names["ada-lovelace"], "slug": "ada-lovelace"},
         "predicted": {"label": 1, "name": names["alan-turing"], "slug": "alan-turing"}, "count": 1},
        {"true": {"label": 1, "name": names["alan-turing"], "slug": "alan-turing"},
         "predicted": {"label": 2, "name": names["grace-hopper"], "slug": "grace-hopper"}, "count": 2},
    ], "top1": 0.5}))
    # real PNGs: the review view shows them
    for plot, shade in (("feature_maps", 40), ("confusion", 120), ("curves", 200)):
        Image.new("RGB", (64, 48), (shade, shade, 255 - shade)).save(files / "eval" / f"{plot}.png")
    paths = [str(p.relative_to(files)) for p in sorted(files.rglob("*")) if p.is_file()]
    record, _ = root.models.register(files, paths, version_id=version_id, num_classes=3, fingerprint="f" * 64,
                                     model_id="m-1")
    return record.model_id


def build(lfw_dev: Path, location: Location, work: Path) -> ErasureStore:
    """The store described in the module docstring, at ``location``."""
    root = StorageRoot(location, SIZING)
    photos = {slug: [p.read_bytes() for p in sorted((lfw_dev / folder).glob("*.jpg"))[:PHOTOS]]
              for _, slug, folder in PEOPLE}
    added = root.registry.add([name for name, _, _ in PEOPLE])
    labels = {identity.slug: identity.label for identity, _ in added}
    names = {slug: name for name, slug, _ in PEOPLE}
    store = ErasureStore(root, photos, "", work / "export")

    def rows_of(run_id: str, slugs: list[str]) -> list[dict[str, Any]]:
        rows = [_raw_row(run_id, names[s], s, i, image, store.url(s, i))
                for s in slugs for i, image in enumerate(photos[s])]
        return rows

    night1 = rows_of("night-1", ["ada-lovelace", "alan-turing"])
    night1.append(_raw_row("night-1", "Ada Lovelace", "ada-lovelace", 99, None, "http://images.example/gone.jpg"))
    # the same bytes as Ada's photo 0 found for Alan: erasing Ada takes them out of Alan's rows too
    night1.append(_raw_row("night-1", "Alan Turing", "alan-turing", 98, photos["ada-lovelace"][0],
                           "http://mirror.example/ada0.jpg"))
    chunk1 = _night(root, "night-1", night1)
    chunk2 = _night(root, "night-2", rows_of("night-2", ["grace-hopper"]))
    _version(root, "v1", {s: photos[s] for s in ("ada-lovelace", "alan-turing")}, labels, parent=None,
             chunks=[chunk1], publish=False)
    _version(root, "v2", photos, labels, parent="v1", chunks=[chunk1, chunk2], publish=True)
    ids_of = {slug: [store.image_id(slug, i) for i in range(4)] for slug in photos}
    store.model_id = _model(root, work, "v2", labels, ids_of)
    root.exclusions.add([
        Exclusion(identity_slug="ada-lovelace", source_image_id=store.image_id("ada-lovelace", 5),
                  reason="wrong_person", source="auto"),
        Exclusion(identity_slug="alan-turing", source_image_id=store.image_id("alan-turing", 5), reason="blurry"),
    ])
    root.plans.write("nightly-20261201", json.dumps(
        {"key": "20261201", "new": ["Ada Lovelace", "Grace Hopper"], "waiting": ["Ada Lovelace"],
         "batches": [{"names": ["Ada Lovelace", "Alan Turing"]}]}).encode())
    chunk_of = {"ada-lovelace": chunk1, "alan-turing": chunk1, "grace-hopper": chunk2}
    review = [(slug, names[slug], store.image_id(slug, i), "kept" if i < 4 else "wrong_person", chunk_of[slug])
              for slug in photos for i in range(len(photos[slug]))]
    root.review.write(pa.table({
        "identity_slug": [r[0] for r in review], "identity": [r[1] for r in review], "image_id": [r[2] for r in review],
        "status": [r[3] for r in review], "distance": [0.3] * len(review), "group": [0] * len(review),
        "reviewed": [False] * len(review), "chunk": [r[4] for r in review],
    }), threshold=0.6, version_id="v2")
    sheets = location.child("curation", "sheets")
    for _, slug, _ in PEOPLE:
        sheets.write_bytes_atomic(sheets.path(f"{slug}.html"), f"<h1>{slug}</h1>".encode())
    sheets.write_bytes_atomic(sheets.path("index.html"), b"<a href='ada-lovelace.html'>Ada Lovelace</a>")
    export_version(root.datasets, "v2", Location.from_uri(str(store.export_dir)), "parquet")
    return store


def row_digests(root: StorageRoot) -> dict[str, set[tuple[str, ...]]]:
    """Every stored row, as (its key columns, sha256 of its bytes), per store: what must stay identical."""

    def digest(data: bytes | None) -> str:
        return "" if data is None else hashlib.sha256(data).hexdigest()

    found: dict[str, set[tuple[str, ...]]] = {"raw": set(), "crops": set(), "versions": set()}
    for batch in root.raw.iter_batches():
        for r in batch.to_pylist():
            found["raw"].add((r["run_id"], r["source_url"], str(r["image_id"]), digest(r["image"])))
    for batch in root.crops.iter_batches(root.crops.records()):
        for r in batch.to_pylist():
            found["crops"].add((r["image_id"], digest(r["crop"]), str(r["phash"]), str(r["embedding"])))
    for manifest in root.datasets.list():
        for batch in root.datasets.iter_batches(manifest.version_id):
            for r in batch.to_pylist():
                found["versions"].add((manifest.version_id, r["sample_id"], r["source_image_id"], digest(r["image"])))
    return found
