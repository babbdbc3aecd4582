"""End-to-end label quality of a curated version built from the demo web, against the demo web's ground truth.

The demo web knows what every result shows (`facescale.demoweb.truth`: each face's box
and who it is). This joins a published version's original samples (aug_index 0) back to the
RAW rows they came from (by ``image_id``) and to the demo web's truth (by URL path), finds
the true face the crop was taken from (the truth box with the highest IoU with the sample's
``face_box``, >= 0.3), and reports:

- label precision: share of the version's source photos whose cropped face is the identity
  it is labelled with; baseline: the same share among the RAW photos the scraper accepted
  (taking, as a careless pipeline would, the largest face of each), measured in the same run;
- what the kept photos are (the demo web's kinds: originals, scenes, re-encodes, pairs...)
  and what the wrong ones are;
- near-duplicates left: kept photos made from the same lfw photo as another kept photo of the
  version (the demo web's other sizes, scenes and re-encodes of a photo, and each engine's
  copies of it when several engines were scraped).

Run after ``make demo`` (or any demo-web scrape + ``facescale curate``):
    .venv/bin/python bench/bench_curation_quality.py [--root var/demo] [--photos ../shared/data/lfw-dev]
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from facescale.demoweb import truth
from facescale.storage import DatasetStore, Location, RawStore, read_table

ENGINES = ("demo", "google", "duckduckgo")  # the demo web's result lists (bing's pages show the demo's)


def iou(a: list[int] | tuple[int, ...], b: list[int] | tuple[int, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / float(aw * ah + bw * bh - inter) if inter else 0.0


def wrong_labels_line(raw_wrong: int, raw_total: int, curated_wrong: int, curated_total: int) -> str:
    """The wrong-label shares of RAW and of the curated version, and their ratio where it is a number.

    With no wrong label among the curated photos there is no ratio to give (it is one against
    zero): the line gives the count instead, which bounds the curated share below 1/total.
    """
    raw = raw_wrong / max(1, raw_total)
    curated = curated_wrong / max(1, curated_total)
    if curated_wrong == 0:
        return f"wrong labels: RAW {raw:.3f} ({raw_wrong} of {raw_total}) -> curated 0 of {curated_total}"
    return (
        f"wrong labels: RAW {raw:.3f} ({raw_wrong} of {raw_total}) -> curated {curated:.3f} "
        f"({curated_wrong} of {curated_total}; {raw / curated:.1f}x fewer)"
    )


def who(row: dict, box: tuple[int, ...] | None) -> str | None:
    """The person whose true face the box covers (None: no face there)."""
    faces, people = row.get("faces") or [], row.get("identities") or []
    if box is None:  # a careless pipeline: the largest face
        if not faces:
            return None
        i = max(range(len(faces)), key=lambda k: faces[k][2] * faces[k][3])
        return people[i] if i < len(people) else None
    scored = [(iou(box, f), i) for i, f in enumerate(faces)]
    best = max(scored, default=(0.0, -1))
    return people[best[1]] if best[0] >= 0.3 and best[1] < len(people) else None


@dataclass
class Report:
    """What `measure` found in one version."""

    version: str
    identities: int
    base: Counter  # RAW accepted photos: right person (True) or not (False)
    ours: Counter  # the version's source photos: True, False, or "unknown"
    kinds: Counter  # the demo-web kind of each kept photo
    wrong: Counter  # what the wrong ones are
    repeats: int  # kept photos sharing an underlying lfw photo with another kept photo

    @property
    def kept(self) -> int:
        return sum(self.ours.values())

    def precision(self) -> float:
        return share(self.ours)

    def lines(self) -> list[str]:
        return [
            f"version {self.version}: {self.identities} identities, {self.kept} source photos"
            f" ({self.ours['unknown']} whose true face box the demo web does not know, left out)",
            f"{'':34}{'photos':>8}{'right person':>14}",
            f"{'RAW accepted (largest face)':34}{sum(self.base.values()):>8}{share(self.base):>14.3f}",
            f"{'curated version (cropped face)':34}{self.kept:>8}{share(self.ours):>14.3f}",
            wrong_labels_line(
                self.base[False],
                self.base[True] + self.base[False],
                self.ours[False],
                self.ours[True] + self.ours[False],
            ),
            f"near-duplicates left: {self.repeats} of {self.kept} kept photos share an underlying lfw photo"
            f" ({self.repeats / max(1, self.kept):.2%})",
            f"kept photos by demo-web kind: {dict(self.kinds.most_common())}",
            f"wrong ones: {dict(self.wrong.most_common()) or 'none'}",
        ]


def share(c: Counter) -> float:
    return c[True] / max(1, c[True] + c[False])


def measure(root: str, photos: Path, version: str | None = None) -> Report:
    """The label quality and the near-duplicates left of a version (default: the newest published) under ``root``."""
    location = Location.from_uri(root)
    store = DatasetStore(location)
    manifest = store.get(version) if version else store.latest()
    if manifest is None:
        raise SystemExit(f"no published version under {root}: run make demo first")
    names = {e.slug: e.name for e in manifest.identities}

    raw = read_table(
        RawStore(location).location, RawStore(location).shard_paths(), ["image_id", "identity", "source_url", "error"]
    )
    url_of: dict[tuple[str, str], str] = {}
    accepted: list[tuple[str, str]] = []
    for image_id, identity, url, error in zip(*(raw.column(c).to_pylist() for c in raw.column_names), strict=True):
        if image_id and (identity, image_id) not in url_of:
            url_of[(identity, image_id)] = urlparse(url).path
        if error is None and identity in names.values():
            accepted.append((identity, urlparse(url).path))
    truth_of: dict[str, dict] = {}  # every engine's list: their URLs differ (bing shows the demo's)
    for name in names.values():
        for engine in ENGINES:
            for row in truth(photos, name, max_results=120, engine=engine):
                truth_of[row["full"]] = row

    # baseline: every accepted RAW photo, labelled with its keyword, largest face taken
    # (a row whose face boxes the demo web could not locate, ``known`` false, is left out: its truth is unknown)
    base = Counter(
        who(truth_of[path], None) == name for name, path in accepted if path in truth_of and truth_of[path]["known"]
    )

    table = read_table(location, store.shard_paths(manifest), ["identity", "source_image_id", "aug_index", "face_box"])
    ours: Counter = Counter()
    kinds: Counter = Counter()
    wrong: Counter = Counter()
    underlying: Counter[tuple[str, ...]] = Counter()  # the lfw photo(s) each kept crop was made from
    for name, source, k, box in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):
        if k != 0:
            continue
        path = url_of.get((name, source))
        row = truth_of.get(path or "")
        if row is None or not row["known"]:
            ours["unknown"] += 1  # not counted right nor wrong
            continue
        person = who(row, (box["x"], box["y"], box["w"], box["h"]))
        underlying[tuple(sorted(row.get("sources") or []))] += 1  # scenes and re-encodes name their photo
        ours[person == name] += 1
        kinds[row["kind"]] += 1
        if person != name:
            wrong[f"{row['kind']}: {'no face' if person is None else 'someone else'}"] += 1
    repeats = sum(n - 1 for key, n in underlying.items() if key and n > 1)
    return Report(manifest.version_id, len(names), base, ours, kinds, wrong, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="var/demo", help="storage root of the demo run")
    parser.add_argument("--photos", default=str(Path(__file__).resolve().parents[2] / "shared/data/lfw-dev"))
    parser.add_argument("--version", default=None, help="dataset version (default: the newest published)")
    args = parser.parse_args()
    print("\n".join(measure(args.root, Path(args.photos), args.version).lines()))


if __name__ == "__main__":
    main()
