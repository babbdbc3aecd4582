"""Wrong-person cleaning: per identity, keep the crops that match its largest consistent group.

Replaces the seed's manual "is this the right person" pass. For one identity:

1. Crops are grouped by average-linkage clustering of their face embeddings, cut at the
   same-person ``threshold`` (dlib's 0.6 by default). Average linkage, unlike single
   linkage (connected components), does not chain two people together through one
   borderline pair; unlike the mean of all crops, the biggest group is not dragged towards
   the wrong people, who on the web can be many (a co-star, a namesake).
2. The largest group is the identity's *core*, if it is trustworthy: at least
   ``min_core`` crops and at least ``min_lead`` times as many as the runner-up group.
   Otherwise the identity is **ambiguous** (two people of about equal weight, or too few
   crops that agree): every crop is held back with reason ``ambiguous`` for a person to
   resolve, rather than guessing which half is right.
3. Each crop's distance to the core is the median of its distances to the core's members
   (itself left out), on the same scale as pairwise distances, so ``threshold`` keeps its
   meaning. Above it: removed as ``wrong_person``. Crops without an embedding are removed as
   ``no_embedding``.

Everything is deterministic (no sampling; ties broken by input position). Precision and
recall on lfw-dev with injected wrong-person photos: bench/bench_cleaning.py.

``clean_identity`` applies the persistent exclusion list around it (listed images out first,
reviewed-and-kept images never removed), and ``write_contact_sheet`` writes the HTML page a
person reviews per identity.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from facescale.storage import Location, make_slug
from facescale.storage.exclusions import Exclusion

from .embeddings import EMBEDDING_DIM, SAME_PERSON_DISTANCE, embedding_distances
from .reasons import CLEANING_REASONS, MEANING, Reason
from .reasons import SHEET_REASONS as _SHEET_REASONS

log = logging.getLogger(__name__)

#: Reason codes a crop can be removed (or held back) for, with their meaning for reviewers.
REASONS: dict[str, str] = {r: MEANING[r] for r in CLEANING_REASONS}

#: What the contact sheets say for every reason a crop can be shown with (cleaning's, dedup's, balance's).
SHEET_REASONS: dict[str, str] = {r: MEANING[r] for r in _SHEET_REASONS}
#: the order of the removed crops on a sheet, by reason (wrong_person first: the likeliest mistakes)
_SHEET_ORDER: dict[str, int] = {r: n for n, r in enumerate(CLEANING_REASONS)}

DEFAULT_MIN_CORE = 3
DEFAULT_MIN_LEAD = 1.5


@dataclass(frozen=True)
class Verdict:
    """The cleaning decision for one crop of an identity.

    Attributes:
        index: position of the crop in the input.
        kept: whether it stays in the dataset.
        reason: None when kept, else a key of ``REASONS``.
        distance: median distance to the core's members (None without an embedding or core).
        group: the crop's group, 0 = the largest (the core), 1 = the runner-up, ...; None
            without an embedding.
        reviewed: a person reviewed it and decided to keep it (exclusion list).
    """

    index: int
    kept: bool
    reason: str | None
    distance: float | None
    group: int | None = None
    reviewed: bool = False

    @property
    def in_core(self) -> bool:
        """Whether the crop belongs to the identity's largest group."""
        return self.group == 0


def find_outliers(
    embeddings: np.ndarray | Sequence[np.ndarray | None],
    threshold: float = SAME_PERSON_DISTANCE,
    *,
    min_core: int = DEFAULT_MIN_CORE,
    min_lead: float = DEFAULT_MIN_LEAD,
) -> list[Verdict]:
    """A verdict per crop of one identity: kept, or removed as ``wrong_person`` / ``no_embedding``.

    Args:
        embeddings: ``(n, 128)`` array (rows of NaN = no embedding) or a sequence of
            ``(128,)`` vectors and Nones.
        threshold: same-person distance cut-off, used to group crops and to judge each one.
        min_core: fewest crops the largest group needs to be trusted as the identity.
        min_lead: how many times bigger than the runner-up group it must be.

    Returns:
        One ``Verdict`` per input row, in input order. If no group is large or dominant
        enough, every crop with an embedding gets ``kept=False, reason=Reason.AMBIGUOUS``.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    if min_core < 2:
        raise ValueError(f"min_core must be >= 2, got {min_core}")
    if min_lead < 1:
        raise ValueError(f"min_lead must be >= 1, got {min_lead}")
    matrix = as_embedding_matrix(embeddings)
    valid = np.flatnonzero(np.all(np.isfinite(matrix), axis=1))
    verdicts: list[Verdict | None] = [None] * len(matrix)
    for i in np.flatnonzero(~np.all(np.isfinite(matrix), axis=1)):
        verdicts[int(i)] = Verdict(int(i), kept=False, reason=Reason.NO_EMBEDDING, distance=None)
    if len(valid):
        dist = embedding_distances(matrix[valid], matrix[valid])
        groups = _groups(dist, threshold)
        core = groups[0]
        runner_up = len(groups[1]) if len(groups) > 1 else 0
        ambiguous = len(core) < min_core or len(core) < min_lead * runner_up
        group_of = {int(member): g for g, members in enumerate(groups) for member in members}
        for local, i in enumerate(valid):
            others = core[core != local]
            distance = float(np.median(dist[local, others])) if len(others) else None
            if ambiguous:
                reason: str | None = Reason.AMBIGUOUS
            elif distance is not None and distance > threshold:
                reason = Reason.WRONG_PERSON
            else:
                reason = None
            verdicts[int(i)] = Verdict(int(i), reason is None, reason, distance, group_of[local])
        if ambiguous:
            log.info(
                "ambiguous identity: largest group %d of %d crops, runner-up %d (min_core=%d, min_lead=%g)",
                len(core),
                len(valid),
                runner_up,
                min_core,
                min_lead,
            )
    return [v for v in verdicts if v is not None]


def clean_identity(
    image_ids: Sequence[str],
    embeddings: np.ndarray | Sequence[np.ndarray | None],
    threshold: float = SAME_PERSON_DISTANCE,
    *,
    excluded: Iterable[str] = (),
    reviewed_keep: Iterable[str] = (),
    min_core: int = DEFAULT_MIN_CORE,
    min_lead: float = DEFAULT_MIN_LEAD,
) -> list[Verdict]:
    """``find_outliers`` with the persistent exclusion list applied around it.

    Images in ``excluded`` are removed (reason ``excluded``) before the core is sought, so
    known wrong people do not weigh in; images in ``reviewed_keep`` are kept whatever their
    distance (a person looked at them). Verdict indices refer to ``image_ids``.
    """
    matrix = as_embedding_matrix(embeddings)
    if len(image_ids) != len(matrix):
        raise ValueError(f"{len(image_ids)} image ids for {len(matrix)} embeddings")
    out_ids, keep_ids = set(excluded), set(reviewed_keep)
    rest = [i for i, image_id in enumerate(image_ids) if image_id not in out_ids]
    judged = find_outliers(matrix[rest], threshold, min_core=min_core, min_lead=min_lead) if rest else []
    verdicts: list[Verdict] = [
        Verdict(i, kept=False, reason=Reason.EXCLUDED, distance=None) for i in range(len(image_ids))
    ]
    for position, verdict in zip(rest, judged, strict=True):
        verdict = replace(verdict, index=position)
        if image_ids[position] in keep_ids and verdict.reason in (Reason.WRONG_PERSON, Reason.AMBIGUOUS):
            verdict = replace(verdict, kept=True, reason=None, reviewed=True)
        verdicts[position] = verdict
    return verdicts


def exclusions_for(identity_slug: str, image_ids: Sequence[str], verdicts: Sequence[Verdict]) -> list[Exclusion]:
    """Automatic exclusion-list entries for the crops removed as ``wrong_person``.

    ``no_embedding`` and ``ambiguous`` verdicts are not listed: the first depends on the
    cropper, the second waits for a person.
    """
    now = datetime.now(UTC)
    return [
        Exclusion(
            identity_slug=identity_slug,
            source_image_id=image_ids[v.index],
            reason=Reason.WRONG_PERSON,
            added_at=now,
            source="auto",
        )
        for v in verdicts
        if v.reason == Reason.WRONG_PERSON
    ]


def as_embedding_matrix(embeddings: np.ndarray | Sequence[np.ndarray | None]) -> np.ndarray:
    """``(n, 128)`` float64 with NaN rows for missing embeddings, from an array or a list with Nones."""
    if isinstance(embeddings, np.ndarray) and embeddings.dtype != object:
        matrix = np.asarray(embeddings, dtype=np.float64)
        if matrix.ndim != 2 or (len(matrix) and matrix.shape[1] != EMBEDDING_DIM):
            raise ValueError(f"expected an (n, {EMBEDDING_DIM}) array, got shape {matrix.shape}")
        return matrix.reshape(len(matrix), EMBEDDING_DIM)
    matrix = np.full((len(embeddings), EMBEDDING_DIM), np.nan)
    for i, vector in enumerate(embeddings):
        if vector is not None:
            row = np.asarray(vector, dtype=np.float64).reshape(-1)
            if row.shape != (EMBEDDING_DIM,):
                raise ValueError(f"embedding {i} has shape {np.shape(vector)}, expected ({EMBEDDING_DIM},)")
            matrix[i] = row
    return matrix


def _groups(dist: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Average-linkage clusters cut at ``threshold``: local indices per group, largest first.

    Ties in size go to the tighter group (smaller mean inner distance), then to the one
    holding the earliest crop.
    """
    n = len(dist)
    if n == 1:
        return [np.array([0])]
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    condensed = squareform(dist, checks=False)
    labels = fcluster(linkage(condensed, method="average"), t=threshold, criterion="distance")
    groups = [np.flatnonzero(labels == label) for label in np.unique(labels)]

    def key(members: np.ndarray) -> tuple[int, float, int]:
        inner = dist[np.ix_(members, members)]
        spread = float(inner.sum() / (len(members) * (len(members) - 1))) if len(members) > 1 else 0.0
        return (-len(members), round(spread, 9), int(members[0]))

    return sorted(groups, key=key)


# -- review contact sheet ----------------------------------------------------------------------


@dataclass(frozen=True)
class SheetItem:
    """One crop on a contact sheet: its id, image bytes (any format PIL reads) and verdict."""

    image_id: str
    image: bytes | None
    verdict: Verdict
    caption: str = ""


def write_contact_sheet(
    target: Location | str | os.PathLike[str],
    identity: str,
    items: Sequence[SheetItem],
    *,
    threshold: float = SAME_PERSON_DISTANCE,
    thumb_size: int = 112,
    slug: str | None = None,
) -> str:
    """Write one self-contained HTML review page for an identity; returns the path written.

    The page is ``<target>/<slug>.html`` (``slug`` defaults to the registry's slug of
    ``identity``), thumbnails inline as base64 JPEG. Removed crops come first, then kept
    ones; within each, the doubtful first (removed: closest to the threshold; kept:
    farthest from the core). Each card shows the reason, the distance and the source image
    id to put on the exclusion list.
    """
    location = target if isinstance(target, Location) else Location.from_uri(os.fspath(target))
    path = location.path(f"{slug or make_slug(identity)}.html")
    page = render_contact_sheet(identity, items, threshold=threshold, thumb_size=thumb_size)
    location.write_bytes_atomic(path, page.encode("utf-8"))
    log.info("contact sheet for %s: %s", identity, location.display(path))
    return location.display(path)


def render_contact_sheet(
    identity: str, items: Sequence[SheetItem], *, threshold: float = SAME_PERSON_DISTANCE, thumb_size: int = 112
) -> str:
    """The HTML text of a contact sheet (see ``write_contact_sheet``)."""
    removed = sorted((it for it in items if not it.verdict.kept), key=_removed_order)
    kept = sorted((it for it in items if it.verdict.kept), key=_kept_order)
    ambiguous = any(it.verdict.reason == Reason.AMBIGUOUS for it in items)
    counts: dict[str, int] = {}
    for it in removed:
        counts[it.verdict.reason or "?"] = counts.get(it.verdict.reason or "?", 0) + 1
    summary = ", ".join(f"{n} {html.escape(r)}" for r, n in sorted(counts.items())) or "none"
    title = f"{identity}: cleaning review"
    parts = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(identity)}</h1>",
        f'<p class="summary">{len(items)} crops: {len(kept)} kept, {len(removed)} removed ({summary}). '
        f"Threshold {threshold:g} on the median distance to the identity's core group.</p>",
    ]
    if ambiguous:
        parts.append(
            f'<p class="banner">Ambiguous identity: {html.escape(MEANING[Reason.AMBIGUOUS])}. '
            "Add the wrong people's source image ids to the exclusion list (source manual) "
            "and the next run will decide again.</p>"
        )
    parts.append('<dl class="legend">')
    for code in sorted({it.verdict.reason for it in removed if it.verdict.reason}):
        parts.append(f"<dt>{html.escape(code)}</dt><dd>{html.escape(SHEET_REASONS.get(code, code))}</dd>")
    parts.append("</dl>")
    for heading, css, group in (("Removed", "removed", removed), ("Kept", "kept", kept)):
        parts.append(f'<section class="{css}"><h2>{heading} ({len(group)})</h2>')
        parts.append('<div class="grid">')
        parts.extend(_card(it, threshold, thumb_size) for it in group)
        parts.append("</div></section>")
    parts.append("</body>")
    parts.append("</html>")
    return "\n".join(parts) + "\n"


def _removed_order(item: SheetItem) -> tuple[int, int, float, int]:
    v = item.verdict
    # wrong_person nearest the threshold first (most likely a mistake); ambiguous by group, then distance
    rank = _SHEET_ORDER.get(v.reason or "", len(_SHEET_ORDER))
    group = v.group if v.reason == Reason.AMBIGUOUS and v.group is not None else 0
    return (rank, group, v.distance if v.distance is not None else math.inf, v.index)


def _kept_order(item: SheetItem) -> tuple[float, int]:
    v = item.verdict
    return (-(v.distance if v.distance is not None else -math.inf), v.index)


def _card(item: SheetItem, threshold: float, thumb_size: int) -> str:
    v = item.verdict
    thumb = _thumbnail_data_uri(item.image, thumb_size) if item.image is not None else None
    if thumb is None:
        img = f'<div class="noimg" style="width:{thumb_size}px;height:{thumb_size}px">no image</div>'
    else:
        img = (
            f'<img src="{thumb}" style="width:{thumb_size}px;height:{thumb_size}px;object-fit:contain" '
            f'alt="{html.escape(item.image_id)}">'
        )
    distance = "-" if v.distance is None else f"{v.distance:.3f}"
    doubtful = v.distance is not None and abs(v.distance - threshold) < 0.05
    label = "kept" if v.kept else html.escape(v.reason or "removed")
    extras = " (reviewed)" if v.reviewed else ""
    group = "" if v.group is None else f", group {v.group}"
    classes = "card" + (" doubtful" if doubtful else "") + ("" if v.kept else " out")
    caption = f'<div class="caption">{html.escape(item.caption)}</div>' if item.caption else ""
    return (
        f'<figure class="{classes}" id="item-{v.index}">{img}<figcaption>'
        f'<div class="verdict">{label}{extras}</div>'
        f'<div class="distance">distance {distance}{group}</div>'
        f'<code title="source image id {html.escape(item.image_id)}">{html.escape(item.image_id)}</code>{caption}'
        "</figcaption></figure>"
    )


def _thumbnail_data_uri(data: bytes, size: int) -> str | None:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            thumb = im.convert("RGB")
            thumb.thumbnail((size, size))
            buf = io.BytesIO()
            thumb.save(buf, format="JPEG", quality=80)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{margin:0 0 .3em}.summary{color:#555}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:.6em}
.legend{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1.2em}
.legend dt{font-weight:bold}.legend dd{margin:0}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{margin:0;padding:6px;border:2px solid #8c8;border-radius:4px;width:min-content;font-size:12px}
.card.out{border-color:#d66}.card.doubtful{outline:3px dashed #e0a000}
.card code{display:block;max-width:12em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.noimg{background:#eee;display:flex;align-items:center;justify-content:center;color:#888}
.verdict{font-weight:bold}
"""
