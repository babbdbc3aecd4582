"""split: exact largest-remainder counts, by source photo, deterministic, order-free and stable."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from facescale.config import CurationSettings, SplitFractions
from facescale.pipeline.split import SplitCounts, SplitParams, split_counts, split_sources

ADJACENT = {("train", "val"), ("val", "train"), ("val", "test"), ("test", "val")}

source_sets = st.lists(st.text(min_size=1, max_size=10), max_size=120, unique=True)
seeds = st.integers(-(2**63), 2**63)


@st.composite
def fraction_triples(draw: st.DrawFn) -> tuple[float, float, float]:
    """Valid fractions in hundredths, zeros for val and test included."""
    train = draw(st.integers(1, 100))
    val = draw(st.integers(0, 100 - train))
    return (train / 100, val / 100, (100 - train - val) / 100)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, (0, 0, 0)),
        (1, (1, 0, 0)),
        (2, (2, 0, 0)),
        (3, (1, 1, 1)),
        (4, (2, 1, 1)),
        (5, (3, 1, 1)),
        (9, (6, 2, 1)),
        (10, (7, 2, 1)),
        (30, (21, 6, 3)),
        (33, (23, 7, 3)),
        (45, (32, 9, 4)),
        (49, (34, 10, 5)),
        (50, (35, 10, 5)),
        (51, (36, 10, 5)),
        (1000, (700, 200, 100)),
    ],
)
def test_default_counts(n: int, expected: tuple[int, int, int]) -> None:
    assert split_counts(n) == SplitCounts(*expected)


@given(st.integers(0, 5000))
def test_default_counts_are_the_rounded_quotas(n: int) -> None:
    counts = split_counts(n)
    assert sum(counts) == n
    if n >= 3:
        assert counts.val >= 1 and counts.test >= 1
    if n >= 10:  # every quota is at least 1: pure largest remainder, within one of the quota
        for count, fraction in zip(counts, (7, 2, 1), strict=True):
            assert n * fraction // 10 <= count <= -(-n * fraction // 10)


def test_default_counts_never_shrink_as_photos_arrive() -> None:
    previous = split_counts(3)
    for n in range(4, 3000):
        counts = split_counts(n)
        assert [b - a for a, b in zip(previous, counts, strict=True)] in ([1, 0, 0], [0, 1, 0], [0, 0, 1])
        previous = counts


@given(st.integers(0, 500), fraction_triples())
def test_counts_for_any_fractions(n: int, fractions: tuple[float, float, float]) -> None:
    counts = split_counts(n, fractions)
    assert sum(counts) == n
    positive = [i for i, f in enumerate(fractions) if f > 0]
    for i, f in enumerate(fractions):
        if f == 0:
            assert counts[i] == 0
        elif n >= len(positive):
            assert counts[i] >= 1


@pytest.mark.parametrize(
    "fractions",
    [(0.7, 0.2), (0.7, 0.2, 0.1, 0.0), (0.0, 0.5, 0.5), (0.8, 0.3, -0.1), (0.7, 0.2, 0.2), (math.nan, 0.5, 0.5)],
)
def test_fractions_are_validated(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        split_counts(10, fractions)
    with pytest.raises(ValueError):
        SplitParams(fractions)  # type: ignore[arg-type]


def test_negative_n_and_repeated_ids_are_rejected() -> None:
    with pytest.raises(ValueError):
        split_counts(-1)
    with pytest.raises(ValueError, match="repeated"):
        split_sources(["a", "b", "a"], SplitParams())


def test_params_from_settings() -> None:
    settings = CurationSettings(split=SplitFractions(train=0.8, val=0.1, test=0.1), seed=3)
    assert SplitParams.from_settings(settings) == SplitParams((0.8, 0.1, 0.1), 3)


def test_fifty_photos_split_35_10_5() -> None:
    ids = [f"{i:064x}" for i in range(50)]
    got = split_sources(ids, SplitParams())
    assert set(got) == set(ids)
    assert [list(got.values()).count(s) for s in ("train", "val", "test")] == [35, 10, 5]


@given(source_sets, fraction_triples(), seeds)
def test_every_photo_gets_exactly_one_split_in_the_exact_counts(
    ids: list[str], fractions: tuple[float, float, float], seed: int
) -> None:
    got = split_sources(ids, SplitParams(fractions, seed))
    assert sorted(got) == sorted(ids)  # each photo once: the splits are disjoint and cover everything
    values = list(got.values())
    assert SplitCounts(values.count("train"), values.count("val"), values.count("test")) == split_counts(
        len(ids), fractions
    )


@given(source_sets, seeds, st.randoms(use_true_random=False))
def test_deterministic_and_order_independent(ids: list[str], seed: int, rnd: random.Random) -> None:
    params = SplitParams(seed=seed)
    first = split_sources(ids, params)
    shuffled = list(ids)
    rnd.shuffle(shuffled)
    assert split_sources(shuffled, params) == first
    assert list(split_sources(shuffled, params).items()) == list(first.items())  # even the key order


def test_the_seed_changes_the_assignment() -> None:
    ids = [f"photo-{i}" for i in range(50)]
    assignments = {tuple(sorted(split_sources(ids, SplitParams(seed=s)).items())) for s in range(5)}
    assert len(assignments) == 5


@given(st.lists(st.text(min_size=1, max_size=10), min_size=4, max_size=120, unique=True), seeds, st.data())
def test_adding_a_photo_moves_at_most_two_others_to_a_neighbouring_split(
    ids: list[str], seed: int, data: st.DataObject
) -> None:
    params = SplitParams(seed=seed)
    old = ids[1:]  # the new photo is ids[0]; at least 3 old ones, so every split is in use
    before = split_sources(old, params)
    after = split_sources(ids, params)
    moved = {s: (before[s], after[s]) for s in old if before[s] != after[s]}
    assert len(moved) <= 2
    assert all(move in ADJACENT for move in moved.values())
    # Removing a photo mirrors it.
    gone = data.draw(st.sampled_from(old))
    shrunk = split_sources([s for s in old if s != gone], params)
    assert sum(shrunk[s] != before[s] for s in shrunk) <= 2


def test_the_same_in_another_process_with_another_hash_seed() -> None:
    ids = [f"photo-{i}" for i in range(50)]
    code = (
        "import json, sys\n"
        "from facescale.pipeline.split import SplitParams, split_sources\n"
        "print(json.dumps(split_sources(json.loads(sys.argv[1]), SplitParams(seed=11))))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout) == split_sources(ids, SplitParams(seed=11))
