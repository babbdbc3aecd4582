"""Shared fixtures: the real LFW photos in ../shared/data (read at test time, never copied in)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# The machine is shared and has two cores: a per-example deadline only makes tests flaky.
settings.register_profile("facescale", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("facescale")

REPO = Path(__file__).resolve().parents[1]
LFW_DEV = Path(os.environ.get("FACESCALE_TEST_DATA", REPO.parent / "shared" / "data" / "lfw-dev"))


@pytest.fixture(scope="session")
def lfw_dev() -> Path:
    """The lfw-dev folder: one sub-folder of real face photos per person."""
    if not LFW_DEV.is_dir():
        pytest.fail(f"test photos not found at {LFW_DEV}; set FACESCALE_TEST_DATA to the lfw-dev folder")
    return LFW_DEV


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's FACESCALE_* environment."""
    for key in list(os.environ):
        if key.startswith("FACESCALE_") and key != "FACESCALE_TEST_DATA":
            monkeypatch.delenv(key)
