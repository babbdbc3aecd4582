"""The same photo through several engines: near-duplicates left in a curated version, keys alone vs the same-face rule.

A search engine's results are other sites' copies of a photo (another size, a border cut off,
a watermark, a re-encode), and several engines bring the same photo several times. This
builds a store from the demo web, whose google and duckduckgo pages list their own copies of
each person's photos (`facescale.demoweb.site.engine_index`), for the 31 people of
``examples/demo-keywords.txt``, in two real scrapes (headless Chromium, ``--per-keyword
60``): ``demo,google,duckduckgo`` (the demo web's own list, google filling what it lacks),
then ``duckduckgo,google`` (another night, another engine first). Then it curates the store
twice with the demo's settings (``min_per_identity`` 15): with the keys alone
(``curation.near_duplicate_same_face=false``, the rule before the same-face tests existed)
and with the default rules, and measures each version with `bench_curation_quality.measure`:
the share of kept photos labelled with the right person, and how many kept photos share an
underlying lfw photo with another kept photo. The second curation reuses the first one's crop
cache, so the two differ only in their decisions.

Run:  .venv/bin/python bench/bench_engines_dedup.py [--root DIR] [--photos ../shared/data/lfw-dev]
(about 5 minutes on 2 cores; the store is kept under --root, a temporary directory by default).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_curation_quality import measure

from facescale.demoweb import DemoWeb

REPO = Path(__file__).resolve().parents[1]
SCRAPES = (("engines-1", "demo,google,duckduckgo"), ("engines-2", "duckduckgo,google"))
CURATIONS = (("keys-only", "false"), ("same-face", "true"))


def facescale(*args: str, env: dict[str, str]) -> str:
    """Run the facescale CLI of this environment; its last output line."""
    command = [str(Path(sys.executable).with_name("facescale")), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args[:1])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="storage root to build (default: a temporary directory)")
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "lfw-dev")
    parser.add_argument("--keywords", type=Path, default=REPO / "examples" / "demo-keywords.txt")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="facescale-engines-"))
    env = {**os.environ, "FACESCALE_STORAGE__ROOT": str(root), "FACESCALE_CURATION__MIN_PER_IDENTITY": "15"}
    started = time.perf_counter()
    with DemoWeb(args.photos) as web:
        for run_id, engines in SCRAPES:
            line = facescale(
                "scrape", "-k", str(args.keywords), "--per-keyword", "60", "--workers", "2",
                "--engine", engines, "--base-url", web.url, "--run-id", run_id, env=env,
            )  # fmt: skip
            print(f"scrape {engines}: {line}")
    reports = []
    for version, same_face in CURATIONS:
        rule = {"FACESCALE_CURATION__NEAR_DUPLICATE_SAME_FACE": same_face}
        facescale("curate", "--version-id", version, env={**env, **rule})
        reports.append(measure(str(root), args.photos, version))
    print(f"\nstore: {root} ({time.perf_counter() - started:.0f} s)")
    print(f"{'version':12}{'kept':>7}{'right person':>14}{'near-duplicates left':>23}")
    for r in reports:
        print(f"{r.version:12}{r.kept:>7}{r.precision():>14.3f}{r.repeats:>12} ({r.repeats / max(1, r.kept):.2%})")
    for r in reports:
        print("\n" + "\n".join(r.lines()))


if __name__ == "__main__":
    main()
