"""Curation's step 2, pure: from the crop cache's metadata to one `IdentityDecision` per identity.

No Ray, no storage, no images: the metadata of every prepared photo (a table with
`META_COLUMNS` and ``chunk``), the active identities, the exclusion list and the settings
in; the decisions and the rejection counts out. In order:

1. claims: which identities claim each photo (RAW ``stored_duplicate`` rows count: bytes
   stored once may have come under two names). A photo claimed twice stays with the one
   identity whose other photos it matches (`attribute`: its embedding within the cleaning
   threshold of theirs, and of no other claimant's) if that identity holds its crop; else it
   is label noise and leaves all of them (``cross_identity_duplicate``);
2. exact and near duplicates across everything left (`dedup.resolve`: the best copy stays);
3. wrong-person cleaning per identity from the dlib embeddings and the exclusion list
   (`cleaning.clean_identity`);
4. the minimum gate and the balance (`balance.balance_identity`; quality = sharpness +
   face resolution + typicality), the split by source photo (`split.split_sources`) and
   the sample plan (`augment.plan_samples`).

Every photo an identity held gets a `PhotoVerdict` (its `Reason` when it is out);
rejections over all photos, crop gates included, are counted by reason in
`Decisions.rejected`. tests/pipeline/test_decide.py exercises it on three-row tables.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facescale.config import CurationSettings
from facescale.storage.exclusions import Exclusion
from facescale.storage.schemas import SPLITS, Split

from .augment import PlannedSample, extra_train_samples, plan_samples
from .balance import BalanceParams, Candidate, Selection, balance_identity
from .cleaning import clean_identity
from .dedup import Record, SameFace, resolve
from .embeddings import EMBEDDING_DIM
from .reasons import Reason
from .split import SplitParams, split_sources
from .timing import Stopwatch

#: The crop cache's columns step 2 reads (``chunk`` is added when the metadata is loaded).
META_COLUMNS = [
    "image_id",
    "identity",
    "identity_slug",
    "error",
    "face_box",
    "sharpness",
    "phash",
    "phash_windows",
    "embedding",
    "face_key",
]


@dataclass(frozen=True)
class PhotoVerdict:
    """One photo of an identity: out for ``reason`` (None: it passed cleaning), and what cleaning saw."""

    reason: Reason | None
    distance: float | None = None  # median embedding distance to the identity's core group
    group: int | None = None  # its embedding group, 0 = the core
    reviewed: bool = False  # a person reviewed it and kept it (exclusion list)


@dataclass
class IdentityDecision:
    """What curation decided for one identity: the balance, the sample plan and a verdict per photo."""

    slug: str
    name: str
    label: int
    selection: Selection
    plan: list[PlannedSample]
    verdicts: dict[str, PhotoVerdict]  # image_id -> verdict
    removed: Counter[str] = field(default_factory=Counter)  # by reason
    chunks: dict[str, str] = field(default_factory=dict)  # image_id -> the crop-cache chunk its crop is read from
    fingerprint: str | None = None  # set by the build: what shapes its samples (curate.identity_fingerprint)

    def counts(self) -> dict[Split, int]:
        """Planned samples per split."""
        found = Counter(p.split for p in self.plan)
        return {s: found.get(s, 0) for s in SPLITS}

    def wrong_person(self) -> list[str]:
        """The photos cleaning found to be someone else (they go on the exclusion list)."""
        return [image_id for image_id, v in self.verdicts.items() if v.reason is Reason.WRONG_PERSON]


@dataclass(frozen=True)
class Decisions:
    """Step 2's result: a decision per identity with usable crops (by slug, sorted) and the rejections."""

    identities: dict[str, IdentityDecision]
    rejected: Counter[str]  # every photo left out, by reason, crop gates included
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step: dedup, cleaning, balance_split


def decide(
    meta: pa.Table,
    names: Mapping[str, tuple[str, int]],
    exclusions: Sequence[Exclusion],
    settings: CurationSettings,
) -> Decisions:
    """Step 2 for every identity with crops: claims, dedup, cleaning, balance, split and the sample plan.

    Args:
        meta: crop-cache metadata (`META_COLUMNS` and ``chunk``) of every prepared photo.
        names: active identities, slug -> (display name, label).
        exclusions: the persistent exclusion list.
        settings: the curation rules.
    """
    from .prepare import STORED_DUPLICATE, key_int, window_ints

    slugs = meta.column("identity_slug").to_pylist()
    image_ids = meta.column("image_id").to_pylist()
    errors = meta.column("error").to_pylist()
    sharpness = meta.column("sharpness").to_pylist()
    boxes = meta.column("face_box").to_pylist()
    phash = meta.column("phash").to_pylist()
    windows = meta.column("phash_windows").to_pylist()
    embeddings = meta.column("embedding")
    vectors_of, has_vector = _embedding_rows(embeddings)
    face_keys = meta.column("face_key").to_pylist()
    chunk_of = meta.column("chunk").to_pylist()
    rejected: Counter[str] = Counter()

    claims: dict[str, set[str]] = defaultdict(set)
    for slug, image_id, error in zip(slugs, image_ids, errors, strict=True):
        if slug in names and (error is None or error == STORED_DUPLICATE):
            claims[image_id].add(slug)
    owners = attribute(slugs, image_ids, errors, embeddings, claims, settings.cleaning_threshold)
    rows: list[int] = []
    seen: set[tuple[str, str]] = set()
    dropped: dict[str, dict[str, Reason]] = defaultdict(dict)
    for i, (slug, image_id, error) in enumerate(zip(slugs, image_ids, errors, strict=True)):
        if slug not in names:
            rejected[Reason.IDENTITY_NOT_ACTIVE.value] += 1
        elif (slug, image_id) in seen:  # the same photo stored twice for one identity
            continue
        elif len(claims.get(image_id, ())) > 1 and not (error is None and owners.get(image_id) == slug):
            # one photo under two names, and it is not clearly this one's: label noise, out of all
            seen.add((slug, image_id))
            dropped[slug][image_id] = Reason.CROSS_IDENTITY_DUPLICATE
            rejected[Reason.CROSS_IDENTITY_DUPLICATE.value] += 1
        elif error == STORED_DUPLICATE:
            continue  # RAW counted it; its bytes are another row of the same identity
        elif error is not None:
            rejected[error] += 1
        else:
            seen.add((slug, image_id))
            rows.append(i)
    records = [
        Record(
            key=f"{slugs[i]}/{image_ids[i]}",
            identity=slugs[i],
            phash=key_int(phash[i]),
            quality=float(sharpness[i] or 0.0),
            sha256=image_ids[i],
            windows=window_ints(windows[i]),
            embedding=vectors_of[i] if has_vector[i] else None,
            face_key=None if face_keys[i] is None else key_int(face_keys[i]),
        )
        for i in rows
    ]
    same_face = (
        SameFace(
            settings.near_duplicate_face_distance,
            settings.near_duplicate_face_bits,
            settings.near_duplicate_aligned_distance,
        )
        if settings.near_duplicate_same_face
        else None
    )
    watch = Stopwatch()
    by_identity: dict[str, list[int]] = defaultdict(list)
    with watch.step("dedup"):
        resolved = resolve(records, settings.near_duplicate_distance, same_face) if records else []
    for i, d in zip(rows, resolved, strict=True):
        if d.keep:
            by_identity[slugs[i]].append(i)
        else:
            reason = Reason(d.reason or Reason.DUPLICATE)
            dropped[slugs[i]][image_ids[i]] = reason
            rejected[reason.value] += 1

    excluded: dict[str, set[str]] = defaultdict(set)
    keep: dict[str, set[str]] = defaultdict(set)
    for entry in exclusions:
        (excluded if entry.excludes else keep)[entry.identity_slug].add(entry.source_image_id)

    balance = BalanceParams.from_settings(settings)
    split = SplitParams.from_settings(settings)
    identities: dict[str, IdentityDecision] = {}
    for slug in sorted(set(by_identity) | set(dropped)):
        members = by_identity.get(slug, [])
        vectors = vectors_of[members]
        with watch.step("cleaning"):
            cleaned = (
                clean_identity(
                    [image_ids[i] for i in members],
                    vectors,
                    settings.cleaning_threshold,
                    excluded=excluded.get(slug, ()),
                    reviewed_keep=keep.get(slug, ()),
                    min_core=settings.cleaning_min_core,
                )
                if members
                else []
            )
        candidates: list[Candidate] = []
        verdicts: dict[str, PhotoVerdict] = {}
        removed: Counter[str] = Counter()
        for v, i in zip(cleaned, members, strict=True):
            verdict = PhotoVerdict(None if v.kept else Reason(v.reason or ""), v.distance, v.group, v.reviewed)
            verdicts[image_ids[i]] = verdict  # (cleaning gives every removal a reason)
            if verdict.reason is None:
                face = boxes[i]
                side = min(face["w"], face["h"]) if face else None
                quality = quality_score(sharpness[i], side, v.distance, settings.cleaning_threshold)
                candidates.append(Candidate(image_ids[i], quality))
            else:
                removed[verdict.reason.value] += 1
                rejected[verdict.reason.value] += 1
        for image_id, reason in dropped.get(slug, {}).items():
            verdicts[image_id] = PhotoVerdict(reason)
            removed[reason.value] += 1
        with watch.step("balance_split"):
            selection = balance_identity(candidates, balance)
            plan: list[PlannedSample] = []
            if selection.kept:
                assignment = split_sources(selection.selected, split)
                extra = extra_train_samples(selection, settings.augment_factor, split.fractions)
                plan = plan_samples(selection, assignment, settings.augment_factor, extra)
        name, label = names[slug]
        identities[slug] = IdentityDecision(
            slug, name, label, selection, plan, verdicts, removed, chunks={image_ids[i]: chunk_of[i] for i in members}
        )
    return Decisions(identities, rejected, watch.seconds)


def _embedding_rows(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The embedding column as a ``(rows, EMBEDDING_DIM)`` float64 matrix (NaN where a photo has none) and
    which rows have one."""
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    matrix = np.full((len(column), EMBEDDING_DIM), np.nan, dtype=np.float64)
    if valid.any():
        values = pc.list_flatten(pc.filter(column, pa.array(valid)))
        matrix[valid] = np.asarray(values, dtype=np.float64).reshape(-1, EMBEDDING_DIM)
    return matrix, valid


def attribute(
    slugs: Sequence[str],
    image_ids: Sequence[str],
    errors: Sequence[str | None],
    embeddings: pa.ChunkedArray,
    claims: Mapping[str, set[str]],
    threshold: float,
) -> dict[str, str]:
    """Photos claimed by several identities that one of them clearly owns: image id -> that identity.

    A claimant vouches for a photo when the median embedding distance from the photo to the
    claimant's own photos (its crops no one else claims) is under ``threshold``. The photo is
    that claimant's when it is the only one vouching and it holds the photo's crop (RAW stored
    the bytes under its name; the others have ``stored_duplicate`` rows without a crop). The
    search engine listed someone's photo under another name (a co-star, a group photo): the
    photo is kept where it belongs instead of being lost to both.
    """
    shared = {image_id for image_id, who in claims.items() if len(who) > 1}
    if not shared:
        return {}
    claimants = {slug for image_id in shared for slug in claims[image_id]}
    own: dict[str, list[np.ndarray]] = defaultdict(list)
    holders: dict[str, set[str]] = defaultdict(set)  # shared image id -> identities holding its crop
    vectors_of: dict[str, np.ndarray] = {}  # shared image id -> its embedding
    for i, (slug, image_id, error) in enumerate(zip(slugs, image_ids, errors, strict=True)):
        if error is not None or slug not in claimants:
            continue
        value = embeddings[i].as_py()
        if value is None:
            continue
        if image_id in shared:
            holders[image_id].add(slug)
            vectors_of.setdefault(image_id, np.asarray(value, dtype=np.float64))
        elif len(claims.get(image_id, ())) == 1:
            own[slug].append(np.asarray(value, dtype=np.float64))
    references = {slug: np.stack(vectors) for slug, vectors in own.items()}
    owners: dict[str, str] = {}
    for image_id, vector in vectors_of.items():
        vouching = [
            slug for slug in sorted(claims[image_id])
            if slug in references
            and float(np.median(np.linalg.norm(references[slug] - vector, axis=1))) < threshold
        ]
        if len(vouching) == 1 and vouching[0] in holders[image_id]:
            owners[image_id] = vouching[0]
    return owners


def quality_score(sharpness: float | None, face_side: int | None, distance: float | None, threshold: float) -> float:
    """How good a clean crop is, for balancing (higher first): three terms in [0, 1], summed.

    Sharpness (variance of the Laplacian, saturating at 300), face resolution in the source
    photo (saturating at 200 px: beyond it the 128 px crop gains nothing) and typicality
    (1 - distance to the identity's core / threshold).
    """
    sharp = min(float(sharpness or 0.0), 300.0) / 300.0
    size = min(float(face_side or 0), 200.0) / 200.0
    typical = 1.0 - min(float(distance), threshold) / threshold if distance is not None else 0.0
    return round(sharp + size + typical, 6)
