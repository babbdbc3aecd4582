"""CURATED samples from cached crops, as a Ray Data transform: each planned (photo, split, copy) becomes a row.

`SampleMaker` gets the plan (which photos each identity uses, their split and how many
copies) once per actor and turns crop-cache rows into CURATED_SCHEMA rows: copy 0 is the
cached crop as stored (bytes unchanged), copies 1.. are `augmented_copy` of it, deterministic
from ``(seed, source_image_id, aug_index)`` and JPEG-encoded. Rows that are not in the plan
are dropped, so the transform can stream over whole cache shards; a photo two chunks cached
(two runs prepared the same RAW shard) is read from the chunk the plan names (shard paths
arrive in the ``path`` column, ``include_paths=True``). Sample ids depend only on
the photo and the copy index (`sample_id`), so a rerun produces the same ids.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from facescale.errors import StorageError
from facescale.storage.schemas import CURATED_SCHEMA

from .augment import AugmentParams, augmented_copy
from .faces import quality


def sample_id(source_image_id: str, aug_index: int) -> str:
    """The deterministic id of copy ``aug_index`` of a source photo."""
    return f"{source_image_id}-{aug_index:03d}"


@dataclass(frozen=True)
class PlannedPhoto:
    """One selected source photo: who it is, its split and the copy indices it gets."""

    identity: str
    identity_slug: str
    label: int
    split: str
    aug_indices: tuple[int, ...]
    chunk: str | None = None  # the crop-cache chunk to read it from (a photo cached twice is used once)


def chunk_of_path(path: str) -> str:
    """The crop-cache chunk a shard path belongs to (``.../<chunk_id>/part-*.parquet``)."""
    return posixpath.basename(posixpath.dirname(path))


def plan_key(identity_slug: str, source_image_id: str) -> str:
    return f"{identity_slug}/{source_image_id}"


class SampleMaker:
    """Ray Data transform (``batch_format="pyarrow"``): crop-cache rows -> CURATED_SCHEMA rows.

    Args:
        plan: `plan_key` -> `PlannedPhoto` for every photo that goes into the version.
        seed: the curation seed (augmentation draws).
        jpeg_quality: quality of the augmented copies' JPEG.
        augment: augmentation ranges (defaults when None).
    """

    def __init__(
        self,
        plan: Mapping[str, PlannedPhoto],
        seed: int,
        jpeg_quality: int = 95,
        augment: AugmentParams | None = None,
    ) -> None:
        cv2.setNumThreads(1)
        self.plan = dict(plan)
        self.seed = seed
        self.jpeg_quality = jpeg_quality
        self.augment = augment

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: dict[str, list[Any]] = {f.name: [] for f in CURATED_SCHEMA}
        columns = {name: batch.column(name).to_pylist() for name in _CACHE_COLUMNS}
        paths = batch.column("path").to_pylist() if "path" in batch.column_names else [None] * batch.num_rows
        for i, (slug, source) in enumerate(zip(columns["identity_slug"], columns["image_id"], strict=True)):
            planned = self.plan.get(plan_key(slug, source))
            crop = columns["crop"][i]
            if planned is None or crop is None:
                continue
            path = paths[i]
            if planned.chunk is not None and path is not None and chunk_of_path(path) != planned.chunk:
                continue  # the same photo cached by another chunk: the plan reads it from one
            image = cv2.imdecode(np.frombuffer(crop, dtype=np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise StorageError(f"the crop cache's crop of {source} does not decode (run `facescale curate` again)")
            for k in planned.aug_indices:
                data, metrics = self._copy(crop, image, source, k, columns, i)
                _append(rows, source, planned, k, columns["face_box"][i], data, image.shape, metrics)
        return pa.Table.from_pydict(rows, schema=CURATED_SCHEMA)

    def _copy(
        self, crop: bytes, image: np.ndarray, source: str, k: int, columns: Mapping[str, Sequence[Any]], i: int
    ) -> tuple[bytes, tuple[float | None, float | None, float | None]]:
        if k == 0:
            return crop, (columns["sharpness"][i], columns["brightness"][i], columns["contrast"][i])
        copy = augmented_copy(image, source, k, self.seed, self.augment)
        ok, encoded = cv2.imencode(".jpg", copy, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:  # pragma: no cover - a valid uint8 image always encodes
            raise RuntimeError("cv2.imencode failed on an augmented crop")
        return encoded.tobytes(), quality(copy)


_CACHE_COLUMNS = ("image_id", "identity_slug", "crop", "face_box", "sharpness", "brightness", "contrast")
#: Crop-cache columns `SampleMaker` reads.
CACHE_COLUMNS = list(_CACHE_COLUMNS)


def _append(
    rows: dict[str, list[Any]],
    source: str,
    planned: PlannedPhoto,
    k: int,
    face_box: Any,
    data: bytes,
    shape: tuple[int, ...],
    metrics: tuple[float | None, float | None, float | None],
) -> None:
    rows["sample_id"].append(sample_id(source, k))
    rows["source_image_id"].append(source)
    rows["identity"].append(planned.identity)
    rows["identity_slug"].append(planned.identity_slug)
    rows["label"].append(planned.label)
    rows["split"].append(planned.split)
    rows["aug_index"].append(k)
    rows["face_box"].append(face_box)
    rows["image"].append(data)
    rows["width"].append(shape[1])
    rows["height"].append(shape[0])
    rows["sharpness"].append(metrics[0])
    rows["brightness"].append(metrics[1])
    rows["contrast"].append(metrics[2])
