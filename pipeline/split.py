"""Train/val/test assignment per identity, by source photo, before any augmentation.

The seed split 70/20/10 *after* augmenting, so near-copies of one photo sat in train and in
test. Here each identity's selected source photos are split first; every augmented copy later
inherits its source's split, so no photo (or copy of it) is in two splits.

Counts are exact, by the largest-remainder rule (`split_counts`): each split gets
``floor(n * fraction)``, the photos left over go to the largest fractional parts (ties: train,
then val, then test), and once ``n`` reaches the number of splits with a positive fraction each
of those gets at least one photo (taken from the largest split). For 50 photos and 0.7/0.2/0.1
that is 35/10/5; for 30, 21/6/3; for 3, 1/1/1.

Which photo goes where: photos are ordered by a keyed hash of ``(seed, source_id)`` (blake2b,
identical on every machine and process) and the first ``train`` go to train, the next ``val`` to
val, the rest to test. So the result depends only on the set of ids and the seed.

Stability when a photo is added: existing photos keep their relative order. With the default
fractions the counts never shrink as ``n`` grows (from n = 3 on), so exactly one split grows by
one, and at most one existing photo crosses each of the two boundaries: at most two photos move,
each to a neighbouring split (train<->val or val<->test, never train<->test). Other fractions can
make largest remainder shrink a split as ``n`` grows (the "Alabama paradox"), and then a few more
photos can move. A removed photo mirrors this. A model trained on an earlier version should
therefore be evaluated on the new version's test photos minus those that were once in train.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, NamedTuple

from facescale.storage.schemas import SPLITS, Split

if TYPE_CHECKING:
    from facescale.config import CurationSettings

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.2, 0.1)

_PERSON = b"fs.split"  # blake2b personalisation: independent of balancing's tie-break


class SplitCounts(NamedTuple):
    """How many source photos each split gets."""

    train: int
    val: int
    test: int


@dataclass(frozen=True)
class SplitParams:
    """How to split an identity's source photos.

    Attributes:
        fractions: train, val and test fractions; each >= 0, train > 0, adding up to 1.
        seed: keys the order photos are dealt out in.
    """

    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    seed: int = 0

    def __post_init__(self) -> None:
        _exact_fractions(self.fractions)

    @classmethod
    def from_settings(cls, settings: CurationSettings) -> SplitParams:
        """The parameters of the ``curation`` settings section.

        Args:
            settings: the curation section of the configuration.

        Returns:
            ``SplitParams((split.train, split.val, split.test), seed)``.
        """
        split = settings.split
        return cls(fractions=(split.train, split.val, split.test), seed=settings.seed)


def split_counts(n: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> SplitCounts:
    """Exact split sizes for ``n`` photos, by largest remainder.

    Args:
        n: the number of source photos (>= 0).
        fractions: train, val and test fractions (validated as in `SplitParams`).

    Returns:
        The counts, adding up to ``n``. Each is ``floor`` or ``ceil`` of ``n * fraction``, except
        that, once ``n`` is at least the number of positive fractions, every split with a positive
        fraction has at least one photo (the largest split gives them up; ties: train first).

    Raises:
        ValueError: ``n`` is negative or the fractions are invalid.
    """
    if n < 0:
        raise ValueError(f"cannot split a negative number of photos ({n})")
    exact = _exact_fractions(fractions)
    quotas = [n * f for f in exact]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(SPLITS)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    positive = [i for i, f in enumerate(exact) if f > 0]
    if n >= len(positive):
        for i in positive:
            if counts[i] == 0:
                donor = max(range(len(SPLITS)), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return SplitCounts(*counts)


def split_sources(source_ids: Iterable[str], params: SplitParams) -> dict[str, Split]:
    """Assign each source photo of one identity to train, val or test.

    Args:
        source_ids: the identity's selected source photo ids, in any order, no repeats.
        params: fractions and seed.

    Returns:
        source id -> split, with exactly `split_counts` photos per split; keys in the order the
        photos were dealt (train first).

    Raises:
        ValueError: a source id appears twice.
    """
    ids = list(source_ids)
    repeated = sorted(s for s, times in Counter(ids).items() if times > 1)
    if repeated:
        raise ValueError(f"source photo ids must be unique; repeated: {repeated[:5]}")
    ordered = sorted(ids, key=lambda s: (_rank_key(params.seed, s), s))
    counts = split_counts(len(ordered), params.fractions)
    result: dict[str, Split] = {}
    start = 0
    for name, count in zip(SPLITS, counts, strict=True):
        for source in ordered[start : start + count]:
            result[source] = name
        start += count
    return result


def _rank_key(seed: int, source_id: str) -> bytes:
    payload = json.dumps([seed, source_id]).encode()
    return hashlib.blake2b(payload, digest_size=16, person=_PERSON).digest()


def _exact_fractions(fractions: Sequence[float]) -> tuple[Fraction, ...]:
    """Validate the fractions and turn them into exact rationals that add up to exactly 1.

    Floats such as 0.7 are read as the decimal they were written as (7/10), so that 50 * 0.7 is
    35, not 34.99999...; the sum must be 1 within 1e-6 and is then made exactly 1.
    """
    values = tuple(fractions)
    if len(values) != len(SPLITS):
        raise ValueError(f"need {len(SPLITS)} fractions (train, val, test), got {len(values)}")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"fractions must be finite and >= 0, got {values}")
    if values[0] <= 0:
        raise ValueError(f"the train fraction must be positive, got {values[0]}")
    if abs(math.fsum(values) - 1.0) > 1e-6:
        raise ValueError(f"fractions must add up to 1, got {values} (sum {math.fsum(values)})")
    exact = tuple(Fraction(v).limit_denominator(1_000_000) for v in values)
    total = sum(exact)
    return tuple(f / total for f in exact)
