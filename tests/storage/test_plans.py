"""The plans store: a plan written once and read back, and the nights that searched each identity as waiting."""

from __future__ import annotations

import json
from pathlib import Path

from facescale.storage import Location
from facescale.storage.plans import PLANS_DIR, PlanStore


def test_plans_are_read_back_and_waiting_nights_counted_besides_tonight(tmp_path: Path) -> None:
    plans = PlanStore(Location.from_uri(str(tmp_path)))
    assert plans.read("nightly-1") is None
    assert plans.waiting_nights("nightly", besides="nightly-1") == {}  # no directory yet
    for name, waiting in (("nightly-1", ["Ada Lovelace"]), ("nightly-2", ["Ada Lovelace", "Alan Turing"]),
                          ("adhoc-3", ["Ada Lovelace"])):
        plans.write(name, json.dumps({"key": name, "waiting": waiting}).encode())
    assert json.loads(plans.read("nightly-2") or b"{}")["waiting"] == ["Ada Lovelace", "Alan Turing"]
    counts = plans.waiting_nights("nightly", besides="nightly-2")
    assert counts == {"ada lovelace": 1}  # nightly-1 only: not tonight's plan, not another prefix's
    assert plans.waiting_nights("nightly", besides="nightly-9") == {"ada lovelace": 2, "alan turing": 1}
    assert (tmp_path / PLANS_DIR / "nightly-1.json").is_file()
