"""balance: waiting / kept / kept_padded, quality first, and a selection that only its own candidates change."""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from facescale.config import CurationSettings
from facescale.pipeline.balance import BalanceParams, Candidate, Selection, balance_identities, balance_identity

PARAMS = BalanceParams(min_count=30, target=50, seed=0)


def _id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _candidates(n: int, prefix: str = "p", quality: float | None = None) -> list[Candidate]:
    return [Candidate(_id(f"{prefix}{i}"), float(i) if quality is None else quality) for i in range(n)]


# Qualities from a small set so that ties (and the hash tie-break) are common.
qualities = st.sampled_from([0.0, 0.5, 1.0, 2.0, 10.0, -3.0, math.inf])
candidate_lists = st.lists(
    st.builds(Candidate, st.text(min_size=1, max_size=8), qualities), max_size=80, unique_by=lambda c: c.source_image_id
)
small_params = st.builds(
    lambda lo, extra, seed: BalanceParams(lo, lo + extra, seed),
    st.integers(1, 12),
    st.integers(0, 12),
    st.integers(-(2**63), 2**63),
)


@pytest.mark.parametrize(
    ("n", "status", "selected", "shortfall", "needed"),
    [
        (0, "waiting", 0, 0, 30),
        (29, "waiting", 0, 0, 1),
        (30, "kept_padded", 30, 20, 0),
        (49, "kept_padded", 49, 1, 0),
        (50, "kept", 50, 0, 0),
        (51, "kept", 50, 0, 0),
        (500, "kept", 50, 0, 0),
    ],
)
def test_the_seed_rules(n: int, status: str, selected: int, shortfall: int, needed: int) -> None:
    got = balance_identity(_candidates(n), PARAMS)
    assert got.status == status
    assert len(got.selected) == selected
    assert len(set(got.selected)) == selected  # never a duplicate
    assert got.candidates == n
    assert got.shortfall == shortfall
    assert got.needed == needed
    assert got.kept == (status != "waiting")


def test_kept_takes_the_best_quality_first() -> None:
    candidates = _candidates(80)  # quality = index
    got = balance_identity(candidates, PARAMS)
    assert got.selected == tuple(c.source_image_id for c in reversed(candidates[30:]))


def test_padded_keeps_every_candidate_best_first() -> None:
    candidates = _candidates(40)
    got = balance_identity(candidates, PARAMS)
    assert set(got.selected) == {c.source_image_id for c in candidates}
    assert got.selected[0] == candidates[-1].source_image_id


def test_ties_are_broken_by_the_seed_and_the_seed_only() -> None:
    equal = _candidates(80, quality=1.0)
    picks = {balance_identity(equal, BalanceParams(30, 50, seed)).selected for seed in range(5)}
    assert len(picks) == 5  # different seeds break the ties differently
    assert balance_identity(equal, BalanceParams(30, 50, 3)) == balance_identity(equal, BalanceParams(30, 50, 3))


def test_the_shortfall_goes_into_the_manifest() -> None:
    padded = balance_identity(_candidates(42), PARAMS)
    assert padded.to_manifest() == {
        "status": "kept_padded",
        "candidates": 42,
        "selected": 42,
        "shortfall": 8,
        "needed": 0,
    }
    assert balance_identity(_candidates(10), PARAMS).to_manifest()["needed"] == 20


def test_any_object_with_an_id_and_a_quality_is_a_candidate() -> None:
    @dataclass(frozen=True)
    class Crop:
        source_image_id: str
        quality: float
        sharpness: float
        face_box: tuple[int, int, int, int]

    crops = [Crop(_id(str(i)), i / 10, 100.0, (0, 0, 10, 10)) for i in range(60)]
    got = balance_identity(crops, PARAMS)
    assert got.status == "kept"
    assert got.selected[0] == crops[-1].source_image_id


def test_repeated_sources_and_nan_quality_are_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        balance_identity([Candidate("a", 1.0), Candidate("a", 2.0)], PARAMS)
    with pytest.raises(ValueError, match="NaN"):
        balance_identity([Candidate("a", math.nan)], PARAMS)


@pytest.mark.parametrize(("min_count", "target"), [(0, 50), (30, 0), (51, 50)])
def test_params_are_validated(min_count: int, target: int) -> None:
    with pytest.raises(ValueError):
        BalanceParams(min_count, target)


def test_params_from_settings() -> None:
    settings = CurationSettings(min_per_identity=5, per_identity=8, seed=7)
    assert BalanceParams.from_settings(settings) == BalanceParams(min_count=5, target=8, seed=7)
    assert BalanceParams.from_settings(CurationSettings()) == PARAMS


@given(candidate_lists, small_params, st.randoms(use_true_random=False))
def test_input_order_does_not_matter_and_reruns_agree(
    candidates: list[Candidate], params: BalanceParams, rnd: random.Random
) -> None:
    first = balance_identity(candidates, params)
    shuffled = list(candidates)
    rnd.shuffle(shuffled)
    assert balance_identity(shuffled, params) == first
    assert balance_identity(iter(candidates), params) == first  # any iterable


@given(candidate_lists, small_params)
def test_the_selection_respects_the_rules(candidates: list[Candidate], params: BalanceParams) -> None:
    got = balance_identity(candidates, params)
    n = len(candidates)
    assert isinstance(got, Selection)
    assert len(set(got.selected)) == len(got.selected) == (0 if n < params.min_count else min(n, params.target))
    quality = {c.source_image_id: c.quality for c in candidates}
    ranked = [quality[s] for s in got.selected]
    assert ranked == sorted(ranked, reverse=True)  # best first
    if got.selected:  # nothing left out is better than anything kept
        left_out = [c.quality for c in candidates if c.source_image_id not in set(got.selected)]
        assert all(q <= ranked[-1] for q in left_out)
    assert len(got.selected) + got.shortfall == (params.target if got.kept else 0)


@given(
    st.dictionaries(st.sampled_from("ABCDE"), candidate_lists, min_size=2, max_size=5),
    st.builds(Candidate, st.text(min_size=9, max_size=12), qualities),
    small_params,
    st.data(),
)
def test_adding_a_photo_to_one_identity_changes_no_other(
    identities: dict[str, list[Candidate]], new: Candidate, params: BalanceParams, data: st.DataObject
) -> None:
    grown = data.draw(st.sampled_from(sorted(identities)))
    before = balance_identities(identities, params)
    after = balance_identities({k: [*v, new] if k == grown else v for k, v in identities.items()}, params)
    for name in identities:
        if name != grown:
            assert after[name] == before[name]


@given(candidate_lists, st.builds(Candidate, st.text(min_size=9, max_size=12), qualities), small_params)
def test_a_full_identity_gaining_a_photo_swaps_at_most_one(
    candidates: list[Candidate], new: Candidate, params: BalanceParams
) -> None:
    before = balance_identity(candidates, params)
    after = balance_identity([*candidates, new], params)
    if len(candidates) >= params.target:
        entered = set(after.selected) - set(before.selected)
        left = set(before.selected) - set(after.selected)
        assert entered <= {new.source_image_id}
        assert len(left) == len(entered)
        if new.quality < min(c.quality for c in candidates):
            assert after.selected == before.selected
