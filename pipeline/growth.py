"""The growth view: identities and samples per published version over time, and each version's top removals.

``curation/growth.html`` (linked from the contact sheets' index) shows ``curation/growth.png``
(matplotlib, Agg backend: identities and samples against creation time, one point per
published version) and a table per version: identities, samples per split, identities still
waiting, and its top removal reasons. The points come from `DatasetStore.growth` (a listing
index, so drawing it reads one file plus what was published since); the page is rewritten
each time a version is published (`pipeline.validate`) and by ``facescale datasets growth``.
"""

from __future__ import annotations

import html
import io
import logging
from collections.abc import Sequence

from facescale.storage import DatasetStore
from facescale.storage.layout import CURATION_DIR
from facescale.storage.versions import GrowthPoint

log = logging.getLogger(__name__)

PAGE = "growth.html"
PLOT = "growth.png"
TOP_REASONS = 3


def write_growth(store: DatasetStore) -> str:
    """Draw the growth view of ``store``'s published versions; returns the page's path as a user types it."""
    points = store.growth()
    where = store.root.child(CURATION_DIR)
    where.write_bytes_atomic(where.path(PLOT), plot_png(points))
    where.write_bytes_atomic(where.path(PAGE), page_html(points).encode())
    return where.display(where.path(PAGE))


def plot_png(points: Sequence[GrowthPoint]) -> bytes:
    """Identities (left axis) and samples (right axis) per published version against its creation time."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, left = plt.subplots(figsize=(8, 3.6), dpi=100)
    try:
        when = mdates.date2num([p.created_at for p in points])
        left.plot(when, [p.identities for p in points], "o-", color="tab:blue", label="identities")
        left.set_ylabel("identities", color="tab:blue")
        left.set_ylim(bottom=0)
        right = left.twinx()
        right.plot(when, [p.samples for p in points], "s--", color="tab:orange", label="samples")
        right.set_ylabel("samples", color="tab:orange")
        right.set_ylim(bottom=0)
        left.xaxis_date()
        locator = mdates.AutoDateLocator()
        left.xaxis.set_major_locator(locator)
        left.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        left.yaxis.set_major_locator(MaxNLocator(integer=True))
        left.set_title(f"facescale dataset growth: {len(points)} published version{'s' if len(points) != 1 else ''}")
        if not points:
            left.text(0.5, 0.5, "no published version yet", ha="center", va="center", transform=left.transAxes)
        left.grid(alpha=0.3)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def page_html(points: Sequence[GrowthPoint]) -> str:
    rows = []
    for p in reversed(points):  # newest first
        top = sorted(p.removed.items(), key=lambda item: (-item[1], item[0]))[:TOP_REASONS]
        reasons = ", ".join(f"{html.escape(r)} {n:,}" for r, n in top) or "-"
        when = p.created_at.strftime("%Y-%m-%d %H:%M")
        rows.append(
            f"<tr><td><a href='../datasets/{html.escape(p.version_id)}/README.md'>{html.escape(p.version_id)}</a></td>"
            f"<td>{when}</td><td>{p.identities:,}</td><td>{p.samples:,}</td>"
            f"<td>{p.splits.get('train', 0):,}/{p.splits.get('val', 0):,}/{p.splits.get('test', 0):,}</td>"
            f"<td>{p.waiting:,}</td><td>{reasons}</td></tr>"
        )
    return (
        "<!doctype html><meta charset='utf-8'><title>facescale dataset growth</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:1.5em}td,th{padding:.2em .8em;text-align:left}"
        "tr:nth-child(even){background:#f4f4f4}</style>"
        "<h1>Dataset growth</h1><p><a href='sheets/index.html'>Contact sheets</a></p>"
        f"<img id='growth' src='{PLOT}' alt='identities and samples per published version' width='800' height='360'>"
        "<h2>Published versions</h2><table id='versions'><tr><th>version (card)</th><th>created (UTC)</th>"
        "<th>identities</th><th>samples</th><th>train/val/test</th><th>waiting</th>"
        f"<th>top removal reasons</th></tr>{''.join(rows)}</table>"
    )
