"""The composition root's own decisions: which version ``latest`` is, and training settings with overrides.

(Training, registration and evaluation through `Services` are exercised end to end by
tests/training/test_cli_training.py and the retraining DAG's tests.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from facescale.app.services import Services
from facescale.config import Settings
from facescale.errors import ConfigError, NotFoundError
from facescale.storage import ValidationSummary


def _services(tmp_path: Path) -> Services:
    return Services(Settings.model_validate({"storage": {"root": str(tmp_path / "store")}}))


def test_latest_is_the_newest_published_version_and_unknown_ids_are_refused(tmp_path: Path) -> None:
    services = _services(tmp_path)
    with pytest.raises(NotFoundError, match="no published dataset versions yet"):
        services.resolve_version("latest")
    with pytest.raises(NotFoundError):
        services.resolve_version("nope")
    store = services.datasets()
    for version, publish in (("v1", True), ("v2", False)):
        with store.create(version, parent=None, config={}) as writer:
            writer.commit([])
        if publish:
            store.publish(version, ValidationSummary(success=True, suite="facescale_curated"))
    assert services.resolve_version("latest") == "v1"  # v2 is newer but not published
    assert services.resolve_version("v2") == "v2"


def test_training_overrides_are_validated_and_unset_ones_ignored(tmp_path: Path) -> None:
    services = _services(tmp_path)
    settings = services.training_settings({"max_epochs": 3, "batch_size": None})
    assert (settings.max_epochs, settings.batch_size) == (3, services.settings.training.batch_size)
    with pytest.raises(ConfigError, match=r"(?s)invalid training settings: .*image_size must be at least 75"):
        services.training_settings({"image_size": 40})  # below Inception V3's 75
