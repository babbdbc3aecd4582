"""Shared fixtures: the real LFW photos in ../shared/data (read at test time, never copied in)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from .helpers import Result, run_cli

# The machine is shared and has two cores: a per-example deadline only makes tests flaky.
settings.register_profile("facescale", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("facescale")

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
# Fixtures whose set-up trains a real model: a test that uses one is in the training tier.
TRAINING_FIXTURES = frozenset({"training_runs", "served_base"})
# tests/training modules that import no TensorFlow and train nothing: in the unit tier
PURE_TRAINING_TESTS = frozenset({"test_plan.py"})
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


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run `facescale` in this process: ``cli("models", "list")`` -> `Result`."""

    def run(*args: str) -> Result:
        return run_cli(capsys, *args)

    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put every test under tests/training, and every test that needs a trained model, in the training tier.

    The tiers are markers (pyproject.toml); `make test-fast` leaves out the ray, browser,
    airflow, training, slow and cluster tiers. In a pytest-xdist worker the grouped tests
    come first (see `pytest_xdist_make_scheduler`), so the longest groups start first.
    """
    for item in items:
        if item.path.name in PURE_TRAINING_TESTS and item.path.parent == TESTS / "training":
            continue  # (tests/training's autouse fixture only starts the runs other tests need)
        in_training = item.path.is_relative_to(TESTS / "training")
        if in_training or TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.training)
    if hasattr(config, "workerinput"):
        ranks = {name: rank for rank, (name, _) in enumerate(XDIST_GROUPS)}
        items.sort(key=lambda item: ranks.get(_xdist_group(item.nodeid) or "", len(ranks)))


# `make test` runs pytest-xdist workers. A tier whose session fixtures are expensive keeps to
# one worker, so its models are trained, its Airflow set up and its Ray clusters started
# once and one at a time; everything else is shared out test by test. (By path, not by
# marker: the controller schedules from node ids alone; xdist's own ``loadgroup`` does not
# work with pytest 9, whose node ids it can no longer suffix.)
XDIST_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("training", ("tests/training/", "tests/serving/")),
    ("airflow", ("tests/dags/",)),
    ("ray", ("tests/pipeline/test_curate.py", "tests/pipeline/test_ray_session.py")),
)


def _xdist_group(nodeid: str) -> str | None:
    return next((name for name, prefixes in XDIST_GROUPS if nodeid.startswith(prefixes)), None)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's scope scheduling with our groups as scopes (every other test its own scope)."""
    from xdist.scheduler import LoadScopeScheduling

    class TierScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _xdist_group(nodeid) or nodeid

    return TierScheduling(config, log)
