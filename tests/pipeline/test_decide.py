"""Curation's step 2 on hand-made metadata: claims, duplicates, cleaning, exclusions, the balance and the plan.

Plain unit tests (no Ray, no images): each builds a few crop-cache metadata rows, with
embeddings placed on purpose (the same person within 0.1 of a point, someone else 1.4 away)
and perceptual keys that are equal, close or far.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from facescale.config import CurationSettings
from facescale.pipeline import cleaning, dedup
from facescale.pipeline.decide import META_COLUMNS, Reason, decide
from facescale.storage.exclusions import Exclusion
from facescale.storage.schemas import CROP_SCHEMA, HASH_BYTES

SCHEMA = pa.schema([CROP_SCHEMA.field(c) for c in META_COLUMNS] + [pa.field("chunk", pa.string())])
NAMES = {"ada": ("Ada", 0), "bob": ("Bob", 1)}
RULES = CurationSettings(min_per_identity=3, per_identity=3, augment_factor=2)


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128)
    return v / np.linalg.norm(v)


ADA, BOB = _unit(1), _unit(2)  # two people, about 1.4 apart


def _near(centre: np.ndarray, k: int) -> list[float]:
    """A face of ``centre``'s person: within 0.1 of it."""
    step = _unit(100 + k)
    return (centre + 0.05 * step).astype(np.float32).tolist()


def _key(n: int) -> bytes:
    """A 192-bit perceptual key; keys of different ``n`` are far apart (Hamming distance about 96)."""
    return np.random.default_rng(1000 + n).bytes(HASH_BYTES)


def _row(image_id: str, slug: str, *, key: int, face: Sequence[float] | None, error: str | None = None,
         sharpness: float = 200.0) -> dict[str, Any]:
    ok = error is None
    return {
        "image_id": image_id,
        "identity": NAMES.get(slug, (slug, 0))[0],
        "identity_slug": slug,
        "error": error,
        "face_box": {"x": 0, "y": 0, "w": 120, "h": 120} if ok else None,
        "sharpness": sharpness if ok else None,
        "phash": _key(key) if ok else None,
        "phash_windows": _key(key) * 5 if ok else None,
        "embedding": list(face) if ok and face is not None else None,
        "chunk": "chunk-a",
    }


def _meta(*rows: dict[str, Any]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


CAROL = _unit(3)  # a third person, about 1.4 from both


def test_a_photo_under_two_names_that_neither_vouches_for_leaves_both_and_is_counted_once_per_name() -> None:
    meta = _meta(
        _row("p1", "ada", key=1, face=_near(CAROL, 1)),  # someone else's photo, listed under both names
        _row("p1", "bob", key=1, face=_near(CAROL, 1)),
        _row("p2", "ada", key=2, face=_near(ADA, 2)),
    )
    decisions = decide(meta, NAMES, [], RULES)
    assert decisions.identities["ada"].verdicts["p1"].reason is Reason.CROSS_IDENTITY_DUPLICATE
    assert decisions.identities["bob"].verdicts["p1"].reason is Reason.CROSS_IDENTITY_DUPLICATE
    assert decisions.rejected["cross_identity_duplicate"] == 2
    # one photo left: no group of three to trust as Ada, so it waits for a person
    assert decisions.identities["ada"].verdicts["p2"].reason is Reason.AMBIGUOUS
    assert not decisions.identities["ada"].selection.kept


def test_a_photo_under_two_names_stays_with_the_one_whose_photos_it_matches() -> None:
    own = [_row(f"a{k}", "ada", key=10 + k, face=_near(ADA, k)) for k in range(2)]
    own += [_row(f"b{k}", "bob", key=20 + k, face=_near(BOB, k)) for k in range(3)]
    ada_held = _meta(
        *own,
        _row("p1", "ada", key=1, face=_near(ADA, 9)),  # Ada's photo, stored under her name ...
        _row("p1", "bob", key=1, face=None, error="stored_duplicate"),  # ... and listed under Bob's too
    )
    decisions = decide(ada_held, NAMES, [], RULES)
    ada, bob = decisions.identities["ada"], decisions.identities["bob"]
    assert ada.verdicts["p1"].reason is None and "p1" in ada.selection.selected
    assert ada.selection.kept  # three agreeing photos: a core to trust
    assert bob.verdicts["p1"].reason is Reason.CROSS_IDENTITY_DUPLICATE
    assert decisions.rejected["cross_identity_duplicate"] == 1

    # the crop was stored under Bob's name: Ada, the only one it matches, has no crop of it: out of both
    bob_held = _meta(
        *own,
        _row("p1", "bob", key=1, face=_near(ADA, 9)),
        _row("p1", "ada", key=1, face=None, error="stored_duplicate"),
    )
    decisions = decide(bob_held, NAMES, [], RULES)
    assert decisions.identities["ada"].verdicts["p1"].reason is Reason.CROSS_IDENTITY_DUPLICATE
    assert decisions.identities["bob"].verdicts["p1"].reason is Reason.CROSS_IDENTITY_DUPLICATE

    # both vouch for it (two look-alikes): label noise, out of both
    lookalike = _meta(
        *own[:2],
        *[_row(f"b{k}", "bob", key=20 + k, face=_near(ADA, 5 + k)) for k in range(3)],
        _row("p1", "ada", key=1, face=_near(ADA, 9)),
        _row("p1", "bob", key=1, face=None, error="stored_duplicate"),
    )
    decisions = decide(lookalike, NAMES, [], RULES)
    assert decisions.identities["ada"].verdicts["p1"].reason is Reason.CROSS_IDENTITY_DUPLICATE


def test_cleaning_trusts_a_smaller_core_when_told() -> None:
    meta = _meta(*[_row(f"a{k}", "ada", key=10 + k, face=_near(ADA, k)) for k in range(2)])
    assert not decide(meta, NAMES, [], RULES).identities["ada"].selection.kept  # two photos: ambiguous
    two = RULES.model_copy(update={"cleaning_min_core": 2, "min_per_identity": 2})
    kept = decide(meta, NAMES, [], two).identities["ada"]
    assert kept.selection.kept and all(v.reason is None for v in kept.verdicts.values())


def test_an_inactive_identity_and_a_failed_crop_are_counted_but_decide_nobody() -> None:
    meta = _meta(
        _row("p1", "carl", key=1, face=_near(BOB, 1)),
        _row("p2", "bob", key=2, face=None, error="blurry"),
        _row("p3", "bob", key=3, face=None, error="no_face"),
    )
    decisions = decide(meta, NAMES, [], RULES)
    assert decisions.identities == {}
    assert decisions.rejected == {"identity_not_active": 1, "blurry": 1, "no_face": 1}


def test_a_kept_identity_loses_its_near_duplicate_and_its_wrong_person_and_plans_its_samples() -> None:
    meta = _meta(
        _row("a1", "ada", key=1, face=_near(ADA, 1)),
        _row("a2", "ada", key=2, face=_near(ADA, 2)),
        _row("a3", "ada", key=3, face=_near(ADA, 3)),
        _row("a4", "ada", key=4, face=_near(ADA, 4)),
        _row("a5", "ada", key=4, face=_near(ADA, 5), sharpness=10.0),  # a4's key, blurrier: the copy dropped
        _row("b1", "ada", key=6, face=_near(BOB, 6)),  # Bob's face under Ada's name
    )
    ada = decide(meta, NAMES, [], RULES).identities["ada"]
    assert ada.verdicts["a5"].reason is Reason.NEAR_DUPLICATE
    assert ada.verdicts["b1"].reason is Reason.WRONG_PERSON
    assert ada.wrong_person() == ["b1"]
    assert ada.removed == {"near_duplicate": 1, "wrong_person": 1}
    assert ada.selection.kept and len(ada.selection.selected) == 3
    assert set(ada.selection.selected) <= {"a1", "a2", "a3", "a4"}
    counts = ada.counts()
    assert sum(counts.values()) == len(ada.plan) > 3  # train photos get augmented copies
    assert {p.source_image_id for p in ada.plan} == set(ada.selection.selected)
    assert ada.chunks["a1"] == "chunk-a"


def test_the_exclusion_list_removes_and_a_reviewed_keep_overrides_cleaning() -> None:
    meta = _meta(
        _row("a1", "ada", key=1, face=_near(ADA, 1)),
        _row("a2", "ada", key=2, face=_near(ADA, 2)),
        _row("a3", "ada", key=3, face=_near(ADA, 3)),
        _row("a4", "ada", key=4, face=_near(ADA, 4)),
        _row("b1", "ada", key=6, face=_near(BOB, 6)),
    )
    listed = [
        Exclusion(identity_slug="ada", source_image_id="a2", reason="blurry in person"),
        Exclusion(identity_slug="ada", source_image_id="b1", reason="reviewed_keep"),
    ]
    ada = decide(meta, NAMES, listed, RULES).identities["ada"]
    assert ada.verdicts["a2"].reason is Reason.EXCLUDED
    assert ada.verdicts["b1"].reason is None and ada.verdicts["b1"].reviewed
    assert ada.wrong_person() == []


@pytest.mark.parametrize("reason", sorted(set(cleaning.REASONS) | set(dedup.REASONS) - {"undecodable"}))
def test_every_reason_cleaning_and_dedup_give_is_a_reason(reason: str) -> None:
    assert Reason(reason).value == reason
