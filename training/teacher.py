"""The teacher: the pretrained dlib face embedding of every source photo, a distillation target.

Curation already computes a 128-d dlib embedding (`pipeline.embeddings`, a ResNet trained on
about three million faces) of every crop it keeps in the crop cache (`storage.crops`,
``CROP_SCHEMA.embedding``). With ``training.teacher: dlib`` the identity model is trained to
reproduce it: besides the softmax loss, every training sample adds

    teacher_weight * (1 - cos(student embedding, dlib embedding of its source photo))

so the backbone learns a face embedding from a model that has seen millions of faces, while
it learns the identities (`model.distillation_model`). An augmented copy's target is its
source photo's embedding: the student learns to be invariant to the augmentations.

`teacher_embeddings` reads the targets of a version's source photos from the crop cache (only
the ``image_id`` and ``embedding`` columns); a photo the cache has no embedding for gets the
zero vector, which adds no gradient (`model.DistillationLoss`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facescale.errors import ConfigError
from facescale.storage import CropStore, DatasetStore

log = logging.getLogger(__name__)

def source_ids(store: DatasetStore, version_id: str, splits: Iterable[str] = ("train", "val")) -> set[str]:
    """The source photos of a version's samples in ``splits`` (the ``source_image_id`` column only)."""
    wanted = set(splits)
    ids: set[str] = set()
    for batch in store.iter_batches(version_id, ["source_image_id", "split"], 8192):
        keep = pc.is_in(batch.column("split"), value_set=pa.array(sorted(wanted), pa.string()))
        ids.update(pc.filter(batch.column("source_image_id"), keep).to_pylist())
    return ids


def teacher_embeddings(crops: CropStore, wanted: set[str], *, centre: bool = True) -> dict[str, np.ndarray]:
    """The dlib embedding of each photo in ``wanted`` the crop cache ``crops`` holds (float32, unit length).

    A photo cropped under several parameter sets has one embedding per chunk; the newest
    chunk's wins (the one the latest curation made).

    ``centre``: subtract the mean of the embeddings found before normalising. dlib's
    embeddings share one direction (on the lfw-dev 20+ version the mean cosine between two
    photos, of anyone, is 0.84; the norm of the mean unit vector 0.92), so a student that
    outputs that direction for every face already scores a cosine of 0.84 without telling
    anyone apart, and a run with raw targets did just that (train top-1 0.04 after two
    epochs). Centred, the mean cosine between two photos is 0.00: only identity is left to learn.

    Raises:
        ConfigError: the cache holds no embedding of any wanted photo (a store curated
        without embeddings, or one whose crop cache was removed).
    """
    found = crops.embeddings(wanted)
    if wanted and not found:
        raise ConfigError(
            "training.teacher is dlib, but the crop cache holds no embedding of this version's photos "
            "(curate the store again to fill it, or set training.teacher to none)"
        )
    if centre and found:
        mean = np.mean(np.stack(list(found.values())), axis=0)
        found = {k: _unit(v - mean) for k, v in found.items()}
    log.info("teacher: dlib embeddings of %d of %d source photos%s", len(found), len(wanted),
             ", centred" if centre else "")
    return found


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)
