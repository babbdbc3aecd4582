"""Why curation leaves a photo out: one enum for every step, what each reason means, and which step gives which.

The crop gates (`faces`), duplicate removal (`dedup`), wrong-person cleaning (`cleaning`)
and the decisions (`decide`, `curate`) record these codes; the crop cache's rows, the
curation notes of a version, its card and the contact sheets show them, and the sheets
explain them with `MEANING`. A `StrEnum`, so a code reads and compares as its text in
Parquet, JSON and HTML. The scraper's download reasons are its own (`scraper.downloader`).
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Every reason a photo of an identity is left out (or shown on a contact sheet) for."""

    # the crop gates (faces.crop_face)
    UNDECODABLE = "undecodable"
    NO_FACE = "no_face"
    FACE_TOO_SMALL = "face_too_small"
    MULTIPLE_FACES = "multiple_faces"
    UNDEREXPOSED = "underexposed"
    OVEREXPOSED = "overexposed"
    LOW_CONTRAST = "low_contrast"
    BLURRY = "blurry"
    # duplicates (dedup)
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    CROSS_IDENTITY_DUPLICATE = "cross_identity_duplicate"
    # wrong-person cleaning (cleaning)
    WRONG_PERSON = "wrong_person"
    NO_EMBEDDING = "no_embedding"
    AMBIGUOUS = "ambiguous"
    EXCLUDED = "excluded"
    # the decisions (decide, curate): not removed for what the photo is
    IDENTITY_NOT_ACTIVE = "identity_not_active"
    SPARE = "spare"
    WAITING = "waiting"


#: What each reason means, for reviewers (contact sheets, docs).
MEANING: dict[Reason, str] = {
    Reason.UNDECODABLE: "missing or empty bytes, or not an image that can be decoded (no crop, no perceptual hash)",
    Reason.NO_FACE: "the cascade found no face, not even on a border-padded copy (the tight-crop retry)",
    Reason.FACE_TOO_SMALL: "every face found is smaller than min_face_px or min_face_fraction of the short side",
    Reason.MULTIPLE_FACES: "several faces and the largest is not `dominance` times the area of the next one",
    Reason.UNDEREXPOSED: "the crop's mean grey level is below min_brightness",
    Reason.OVEREXPOSED: "the crop's mean grey level is above max_brightness",
    Reason.LOW_CONTRAST: "the standard deviation of the crop's grey levels is below min_contrast",
    Reason.BLURRY: "the variance of the Laplacian of the grey crop is below min_sharpness",
    Reason.DUPLICATE: "byte-identical (same sha256) to the kept image of the same identity",
    Reason.NEAR_DUPLICATE: "perceptual hash within the distance of a better-quality kept image of the same identity",
    Reason.CROSS_IDENTITY_DUPLICATE: "the same photo appears under two or more identities (label noise): "
    "all copies dropped",
    Reason.WRONG_PERSON: "farther than the threshold from the identity's core group: probably someone else",
    Reason.NO_EMBEDDING: "no face embedding: the image did not decode or holds no usable face",
    Reason.AMBIGUOUS: "no group of crops clearly dominates this identity: held back for a person to decide",
    Reason.EXCLUDED: "on the persistent exclusion list (curation/exclusions.json)",
    Reason.IDENTITY_NOT_ACTIVE: "the identity was removed from the registry",
    Reason.SPARE: "clean, but the identity already has its quota of better-quality photos",
    Reason.WAITING: "clean; the identity waits for more photos before it is used",
}

#: The reasons each step can give.
CROP_REASONS = (
    Reason.UNDECODABLE, Reason.NO_FACE, Reason.FACE_TOO_SMALL, Reason.MULTIPLE_FACES,
    Reason.UNDEREXPOSED, Reason.OVEREXPOSED, Reason.LOW_CONTRAST, Reason.BLURRY,
)
DEDUP_REASONS = (Reason.DUPLICATE, Reason.NEAR_DUPLICATE, Reason.CROSS_IDENTITY_DUPLICATE, Reason.UNDECODABLE)
CLEANING_REASONS = (Reason.WRONG_PERSON, Reason.AMBIGUOUS, Reason.EXCLUDED, Reason.NO_EMBEDDING)  # sheet order
#: What a contact sheet shows a crop with: cleaning's, dedup's and the balance's reasons.
SHEET_REASONS = (*CLEANING_REASONS, *DEDUP_REASONS, Reason.SPARE, Reason.WAITING)
