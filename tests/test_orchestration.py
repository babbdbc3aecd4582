"""The DAG tasks' own logic: the run key. The night's plan and the retraining decision are their
stages' (tests/scraper/test_night.py, tests/training/test_decision.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from facescale.app.orchestration import run_key


def test_run_key_from_the_logical_date_or_the_run_id() -> None:
    assert run_key(datetime(2026, 11, 30, 0, 0, tzinfo=UTC), "scheduled__2026-11-30T00:00:00+00:00") == "20261130"
    key = run_key(None, "manual__2026-11-30T09:02:14.300030+00:00")
    assert key == "2026-11-30T09-02-14.300030-00-00"
    assert run_key(None, "manual__2026-11-30T09:02:14.300030+00:00") == key  # stable for a run
    assert run_key(None, "my run/1") == "my-run-1"
