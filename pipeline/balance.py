"""Per-identity balancing: which source photos an identity keeps, or whether it waits for more.

The seed's rules, made configurable (``curation.min_per_identity``, ``curation.per_identity``):

- fewer than ``min_count`` clean candidates: the identity is ``waiting`` (nothing selected; a
  later nightly run uses it once enough photos have arrived);
- at least ``target``: ``kept``, exactly ``target`` selected, best quality first;
- in between: ``kept_padded``, every candidate selected and the ``shortfall`` (``target - n``
  photos) recorded. The seed duplicated photos to reach 50; we never do. The augmentation plan
  (`facescale.pipeline.augment.plan_samples`) makes up the difference with extra augmented
  *train* samples, and the shortfall goes into the manifest (`Selection.to_manifest`).

Selection is a pure function of one identity's candidate set and the seed: input order does
not matter, reruns give identical output, and adding photos to one identity cannot change
another's selection. Ranking is by quality (higher is better), ties broken by a keyed hash of
``(seed, source_image_id)`` (blake2b, so the same on every machine and process), then by the id.
When an identity that already has ``target`` or more candidates gains one, its selection changes
by at most one photo in and one out (the new photo enters only if it outranks the last one kept).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from facescale.config import CurationSettings

Status = Literal["waiting", "kept", "kept_padded"]

_PERSON = b"fs.balance"  # blake2b personalisation: these ranks are independent of the split's


class Scored(Protocol):
    """Anything with a source photo id and a quality score (higher is better)."""

    @property
    def source_image_id(self) -> str: ...

    @property
    def quality(self) -> float: ...


@dataclass(frozen=True)
class Candidate:
    """One clean face crop an identity could use.

    Attributes:
        source_image_id: the RAW photo the crop came from (its content hash).
        quality: a score from the cleaning stage; higher is better. NaN is rejected.
    """

    source_image_id: str
    quality: float


@dataclass(frozen=True)
class BalanceParams:
    """The balancing rules.

    Attributes:
        min_count: candidates an identity needs before it is used at all.
        target: source photos every kept identity ends up with.
        seed: keys the tie-break between candidates of equal quality.
    """

    min_count: int = 30
    target: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_count < 1 or self.target < 1:
            raise ValueError(f"min_count and target must be at least 1, got {self.min_count} and {self.target}")
        if self.min_count > self.target:
            raise ValueError(f"min_count ({self.min_count}) must not exceed target ({self.target})")

    @classmethod
    def from_settings(cls, settings: CurationSettings) -> BalanceParams:
        """The parameters of the ``curation`` settings section.

        Args:
            settings: the curation section of the configuration.

        Returns:
            ``BalanceParams(min_per_identity, per_identity, seed)``.
        """
        return cls(min_count=settings.min_per_identity, target=settings.per_identity, seed=settings.seed)


@dataclass(frozen=True)
class Selection:
    """What one identity keeps.

    Attributes:
        status: ``waiting``, ``kept`` or ``kept_padded``.
        selected: the chosen source photo ids, best first; empty while waiting.
        candidates: how many candidates there were.
        min_count: the rule's minimum, for the record.
        target: the rule's target, for the record.
    """

    status: Status
    selected: tuple[str, ...]
    candidates: int
    min_count: int
    target: int

    @property
    def kept(self) -> bool:
        """Whether the identity goes into the dataset."""
        return self.status != "waiting"

    @property
    def shortfall(self) -> int:
        """Source photos missing to reach ``target`` (only ``kept_padded`` has any)."""
        return self.target - len(self.selected) if self.status == "kept_padded" else 0

    @property
    def needed(self) -> int:
        """More candidates a ``waiting`` identity needs before it is used (0 otherwise)."""
        return self.min_count - self.candidates if self.status == "waiting" else 0

    def to_manifest(self) -> dict[str, Any]:
        """A JSON-ready record of the decision for the version manifest.

        Returns:
            ``status``, ``candidates``, ``selected`` (a count), ``shortfall`` (photos the
            augmentation made up with extra augmented train samples, never duplicates) and
            ``needed``.
        """
        return {
            "status": self.status,
            "candidates": self.candidates,
            "selected": len(self.selected),
            "shortfall": self.shortfall,
            "needed": self.needed,
        }


def balance_identity(candidates: Iterable[Scored], params: BalanceParams) -> Selection:
    """Choose the source photos of one identity.

    Args:
        candidates: the identity's clean crops, one per source photo, in any order.
        params: the balancing rules.

    Returns:
        The `Selection`: ``waiting`` below ``params.min_count`` candidates, ``kept`` with exactly
        ``params.target`` photos (the best by quality) from ``target`` candidates up, otherwise
        ``kept_padded`` with every candidate and a shortfall of ``target - n``.

    Raises:
        ValueError: a source photo id appears twice, or a quality is NaN.
    """
    ranked = _rank(candidates, params.seed)
    n = len(ranked)
    if n < params.min_count:
        status: Status = "waiting"
        selected: tuple[str, ...] = ()
    elif n >= params.target:
        status, selected = "kept", tuple(ranked[: params.target])
    else:
        status, selected = "kept_padded", tuple(ranked)
    return Selection(status, selected, n, params.min_count, params.target)


def balance_identities(
    candidates_by_identity: Mapping[str, Iterable[Scored]], params: BalanceParams
) -> dict[str, Selection]:
    """`balance_identity` for many identities; each is decided on its own candidates only.

    Args:
        candidates_by_identity: identity (name or slug) -> its candidates.
        params: the balancing rules.

    Returns:
        identity -> its `Selection`, in the mapping's order.
    """
    return {identity: balance_identity(found, params) for identity, found in candidates_by_identity.items()}


def _rank(candidates: Iterable[Scored], seed: int) -> list[str]:
    """Source ids, best first: quality descending, then keyed hash, then id."""
    keyed: list[tuple[float, bytes, str]] = []
    seen: set[str] = set()
    for candidate in candidates:
        source = candidate.source_image_id
        quality = float(candidate.quality)
        if source in seen:
            raise ValueError(f"source photo {source!r} is a candidate twice; deduplicate before balancing")
        if math.isnan(quality):
            raise ValueError(f"source photo {source!r} has a NaN quality score")
        seen.add(source)
        keyed.append((-quality, _tie_break(seed, source), source))
    keyed.sort()
    return [source for _, _, source in keyed]


def _tie_break(seed: int, source_id: str) -> bytes:
    payload = json.dumps([seed, source_id]).encode()
    return hashlib.blake2b(payload, digest_size=16, person=_PERSON).digest()
