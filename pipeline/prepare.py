"""Per-photo curation work as one Ray Data transform: RAW rows in, crop-cache rows (crop, keys, embedding) out.

`CropPreparer` takes a batch of RAW rows (pyarrow), drops the rows the scraper already
rejected (they are recorded in RAW with their reason), and for each accepted photo:

1. detects and crops the face (`facescale.pipeline.faces.crop_face`, quality gates included);
2. computes the 192-bit perceptual key of the crop and its five window keys
   (`facescale.pipeline.dedup.image_keys`), for near-duplicate search;
3. computes the 128-d dlib face embedding of the crop (`FaceEmbedder`), for wrong-person
   cleaning.

The three run in one actor on purpose: each needs a model loaded once per process (two
cascades, dlib's predictor and network, about 100 MB), and chaining three actor pools on a
small machine would triple that memory and ship every crop through the object store twice
more. Rejected photos (``error`` set) keep their face box and metrics when there were any,
so a person can see by how much a gate was missed. RAW rows rejected as ``duplicate`` (bytes
already stored, possibly under another name) become ``stored_duplicate`` rows without a crop:
dedup needs them to see one photo filed under two identities. Output rows follow CROP_SCHEMA
exactly.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from facescale.storage.schemas import CROP_SCHEMA, HASH_BYTES

from .dedup import image_key, image_keys
from .embeddings import FaceEmbedder, decode_rgb
from .faces import CropParams, CropResult, FaceCropper
from .reasons import Reason

log = logging.getLogger(__name__)

#: Reason of a cache row for a RAW ``duplicate`` row: the same bytes are stored under an earlier row.
STORED_DUPLICATE = "stored_duplicate"
#: RAW columns the transform reads.
RAW_COLUMNS = ("image_id", "run_id", "identity", "identity_slug", "image", "error")


def key_bytes(key: int) -> bytes:
    """A 192-bit key as 24 big-endian bytes (CROP_SCHEMA's ``phash``)."""
    return key.to_bytes(HASH_BYTES, "big")


def key_int(data: bytes) -> int:
    return int.from_bytes(data, "big")


def window_ints(data: bytes) -> tuple[int, ...]:
    return tuple(key_int(data[i : i + HASH_BYTES]) for i in range(0, len(data), HASH_BYTES))


class CropPreparer:
    """Ray Data transform (``batch_format="pyarrow"``): RAW rows -> CROP_SCHEMA rows.

    Args:
        params: detection, crop and gate settings.
    """

    def __init__(self, params: CropParams) -> None:
        self.cropper = FaceCropper(params)
        self.embedder = FaceEmbedder()

    def __call__(self, batch: pa.Table) -> pa.Table:
        accepted = batch.filter(pc.and_(pc.is_null(batch["error"]), pc.is_valid(batch["image"])))
        results = self.cropper.crop_all(accepted.column("image").to_pylist())
        rows: dict[str, list[Any]] = {f.name: [] for f in CROP_SCHEMA}
        for key in ("image_id", "run_id", "identity", "identity_slug"):
            rows[key] = accepted.column(key).to_pylist()
        # Bytes stored once under another row: the photo still counts for this identity when
        # dedup looks for the same photo under two names, so keep the claim (no crop).
        claims = batch.filter(pc.and_(pc.equal(batch["error"], "duplicate"), pc.is_valid(batch["image_id"])))
        for key in ("image_id", "run_id", "identity", "identity_slug"):
            rows[key] += claims.column(key).to_pylist()
        results += [CropResult(STORED_DUPLICATE)] * claims.num_rows
        for result in results:
            error, phash, windows, embedding, face_key = result.error, None, None, None, None
            if result.ok and result.image is not None:
                rgb = decode_rgb(result.image)
                if rgb is None:  # pragma: no cover - our own JPEG always decodes
                    error = Reason.UNDECODABLE
                else:
                    keys = image_keys(Image.fromarray(rgb))
                    phash = key_bytes(keys.key)
                    windows = b"".join(key_bytes(k) for k in keys.windows)
                    vector, chip = self.embedder.embed_and_align(rgb)
                    embedding = None if vector is None else vector.tolist()
                    face_key = None if chip is None else key_bytes(image_key(Image.fromarray(chip)))
            rows["error"].append(error)
            rows["crop"].append(result.image if error is None else None)
            rows["face_box"].append(
                None if result.face_box is None else dict(zip("xywh", result.face_box, strict=True))
            )
            rows["sharpness"].append(result.sharpness)
            rows["brightness"].append(result.brightness)
            rows["contrast"].append(result.contrast)
            rows["faces"].append(result.faces)
            rows["phash"].append(phash)
            rows["phash_windows"].append(windows)
            rows["embedding"].append(embedding)
            rows["face_key"].append(face_key)
        return pa.Table.from_pydict(rows, schema=CROP_SCHEMA)
