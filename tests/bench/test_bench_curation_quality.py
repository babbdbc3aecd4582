"""bench_curation_quality's summary line: honest when the curated version has no wrong label."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_curation_quality.py"


def _bench():  # bench/ holds scripts, not a package: load the file itself
    spec = importlib.util.spec_from_file_location("bench_curation_quality", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_no_wrong_curated_label_gives_counts_not_a_ratio_against_zero() -> None:
    line = _bench().wrong_labels_line(161, 887, 0, 612)
    assert line == "wrong labels: RAW 0.182 (161 of 887) -> curated 0 of 612"
    assert "x fewer" not in line


def test_a_ratio_when_both_have_wrong_labels() -> None:
    line = _bench().wrong_labels_line(180, 1000, 9, 600)
    assert line == "wrong labels: RAW 0.180 (180 of 1000) -> curated 0.015 (9 of 600; 12.0x fewer)"
