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

With ``training.teacher_extra`` the teacher also teaches on photos the version does not use
(`extra_crops`): every usable crop in the cache that is not one of the version's source photos
(spares beyond an identity's quota, waiting or removed identities, copies dedup removed,
photos cleaning gave to someone else), unlabelled, learnt from the teacher alone. None of
them may stand in for a held-out photo: a crop that curation's duplicate rule
(`pipeline.dedup.near_duplicate_pairs` on the cache's perceptual keys and window keys) calls
a near-duplicate of a val or test photo (a re-encode, resize or crop of it) is left out, as
curation keeps such copies out of a version's other splits. dlib's embedding cannot tell
those copies apart: on the demo's version they sit 0.06-0.15 from the photo they copy, and
two distinct photos of one person as close as 0.14.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from facescale.errors import ConfigError
from facescale.pipeline.dedup import DEFAULT_MAX_DISTANCE, near_duplicate_pairs
from facescale.storage import CropStore, DatasetStore
from facescale.storage.schemas import EMBEDDING_DIM

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ExtraCrops:
    """Unlabelled crops for the teacher: encoded crops and their dlib embeddings (unit, uncentred)."""

    image_ids: tuple[str, ...]
    images: tuple[bytes, ...]
    embeddings: np.ndarray  # (n, EMBEDDING_DIM) float32

    def __len__(self) -> int:
        return len(self.image_ids)


def sources_by_split(store: DatasetStore, version_id: str) -> dict[str, set[str]]:
    """The source photos of a version's samples, per split (one pass over the ``source_image_id`` and
    ``split`` columns)."""
    found: dict[str, set[str]] = {}
    for batch in store.iter_batches(version_id, ["source_image_id", "split"], 8192):
        for split, source in zip(batch.column("split").to_pylist(), batch.column("source_image_id").to_pylist(),
                                 strict=True):
            found.setdefault(split, set()).add(source)
    return found


def source_ids(store: DatasetStore, version_id: str, splits: Iterable[str] = ("train", "val")) -> set[str]:
    """The source photos of a version's samples in ``splits`` (`sources_by_split`, joined)."""
    by_split = sources_by_split(store, version_id)
    return set().union(*(by_split.get(split, set()) for split in splits))


def extra_crops(
    crops: CropStore, sources: Mapping[str, set[str]], *, max_distance: int = DEFAULT_MAX_DISTANCE
) -> ExtraCrops:
    """Every usable crop the cache holds with an embedding, but the version's own photos and copies of held-out ones.

    Args:
        crops: the crop cache.
        sources: the version's source photos per split (`sources_by_split`); its val and test
            photos are the held-out ones.
        max_distance: the near-duplicate distance between perceptual keys (curation's default);
            a crop that near-duplicates a held-out photo, or has no key to tell, is left out.

    Returns:
        The extra crops, in the cache's order (a photo in several chunks: the newest chunk's crop).
        They are held in memory (about 5 KB a crop).
    """
    version_sources: set[str] = set().union(*sources.values())
    held_out = sources.get("val", set()) | sources.get("test", set())
    found: dict[str, tuple[bytes, np.ndarray, bytes, bytes]] = {}
    held: dict[str, tuple[bytes, bytes]] = {}
    columns = ["image_id", "error", "crop", "embedding", "phash", "phash_windows"]
    for batch in crops.iter_batches(crops.records(), columns=columns, batch_size=4096):
        for image_id, error, image, vector, key, windows in zip(
            *(batch.column(c).to_pylist() for c in columns), strict=True
        ):
            if image_id in held_out and key and windows:
                held[image_id] = (key, windows)
            elif error is None and image and vector is not None and key and windows and image_id not in version_sources:
                found[image_id] = (image, np.asarray(vector, np.float32), key, windows)
    ids = list(found)
    copies: set[int] = set()
    if ids and held:
        rows = [*held.values(), *((found[i][2], found[i][3]) for i in ids)]
        keys = np.stack([np.frombuffer(key, ">u8") for key, _ in rows]).astype(np.uint64)
        windows = np.stack([np.frombuffer(w, ">u8").reshape(-1, keys.shape[1]) for _, w in rows]).astype(np.uint64)
        for i, j in near_duplicate_pairs(keys, max_distance, windows=windows):
            if i < len(held) <= j:  # a held-out photo (first) and an extra crop
                copies.add(int(j) - len(held))
    kept = [i for n, i in enumerate(ids) if n not in copies]
    log.info("teacher: %d extra crops from the cache (%d left out: near-duplicates of a val or test photo)",
             len(kept), len(copies))
    embeddings = np.stack([_unit(found[i][1]) for i in kept]) if kept else np.zeros((0, EMBEDDING_DIM), np.float32)
    return ExtraCrops(tuple(kept), tuple(found[i][0] for i in kept), embeddings)


def teacher_embeddings(
    crops: CropStore, wanted: set[str], *, centre: bool = True, extra: ExtraCrops | None = None
) -> dict[str, np.ndarray]:
    """The dlib embedding of each photo in ``wanted`` the crop cache ``crops`` holds (float32, unit length).

    A photo cropped under several parameter sets has one embedding per chunk; the newest
    chunk's wins (the one the latest curation made).

    ``centre``: subtract the mean of the embeddings found before normalising. dlib's
    embeddings share one direction (on the lfw-dev 20+ version the mean cosine between two
    photos, of anyone, is 0.84; the norm of the mean unit vector 0.92), so a student that
    outputs that direction for every face already scores a cosine of 0.84 without telling
    anyone apart, and a run with raw targets did just that (train top-1 0.04 after two
    epochs). Centred, the mean cosine between two photos is 0.00: only identity is left to learn.

    ``extra``: the extra crops' targets are returned too, centred on the same mean (taken over
    both).

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
    log.info("teacher: dlib embeddings of %d of %d source photos%s", len(found), len(wanted),
             ", centred" if centre else "")
    if extra is not None:
        found.update(zip(extra.image_ids, extra.embeddings, strict=True))
    if centre and found:
        mean = np.mean(np.stack(list(found.values())), axis=0)
        found = {k: _unit(v - mean) for k, v in found.items()}
    return found


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)
