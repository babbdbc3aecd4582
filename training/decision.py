"""Whether a published dataset version warrants training, and from which model to warm-start.

`retrain_decision` compares the version with the version of the newest registered model that
passed the quality bar (`passed_bar`): enough new identities or enough more samples trains,
the same version never does (unless forced). A model an erasure marked (``notes.retrain``,
`storage.erasure`) is retrained from scratch: never warm-started from. Reads the dataset store
and the model registry.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from facescale.config import OrchestrationSettings, Settings
from facescale.storage import StorageRoot


class Decision(BaseModel):
    """Whether a dataset version warrants training, and from which model to warm-start."""

    model_config = ConfigDict(extra="forbid")

    train: bool
    reason: str
    version_id: str | None
    base_model: str | None = None  # newest model that passed the quality bar (the warm start)
    base_version: str | None = None
    new_identities: list[str] = Field(default_factory=list)
    new_samples: float | None = None  # relative growth in samples over base_version


def passed_bar(record: Any, orch: OrchestrationSettings) -> bool:
    """The quality bar: the Inception V3's test top-1, what the default backend answers right on the test photos
    (models evaluated before it was measured: not checked), and, for a warm start, no worse than the model it
    replaces on that model's identities."""
    evaluation = record.metrics.get("evaluation") or {}
    top1 = evaluation.get("top1")
    if top1 is None or top1 < orch.min_test_top1:
        return False
    served = record.metrics.get("serving_test")
    if served is not None and (served.get("answered_right") or 0.0) < orch.min_served_right:
        return False
    warm = record.metrics.get("warm_start") or {}
    return warm.get("at_least_as_good") is not False


def retrain_decision(
    root: StorageRoot, settings: Settings, version_id: str | None, *, force: bool = False
) -> Decision:
    """Train when the version adds ``retrain_min_new_identities`` identities or ``retrain_min_new_samples``
    more samples than the version of the newest model that passed the bar (or when forced, or when
    there is no such model); skip when that model was trained on this very version."""
    orch = settings.orchestration
    store = root.datasets
    if version_id is None:
        newest = store.latest(published_only=True)
        if newest is None:
            return Decision(train=False, reason="no published dataset version yet", version_id=None)
        version_id = newest.version_id
    manifest = store.get(version_id)
    if not manifest.published:
        return Decision(
            train=False, reason=f"dataset version {version_id} is not published (validation failed?)",
            version_id=version_id,
        )
    models = [r for r in root.models.list() if passed_bar(r, orch)]
    base = models[-1] if models else None
    if base is None:
        return Decision(train=True, reason="no model has passed the quality bar yet", version_id=version_id)
    if base.notes.get("retrain"):  # an erasure took data it learned from: retrain, never warm-start from it
        erasures = ", ".join(base.notes.get("erasures", [])) or "an erasure"
        return Decision(train=True, reason=f"model {base.model_id} learned from data {erasures} removed: retrain "
                        "from scratch", version_id=version_id)
    decision = Decision(
        train=False, reason="", version_id=version_id, base_model=base.model_id, base_version=base.version_id
    )
    if base.version_id == version_id and not force:
        decision.reason = f"model {base.model_id} was trained on {version_id} already"
        return decision
    base_manifest = store.get(base.version_id)
    old = {i.slug for i in base_manifest.identities}
    decision.new_identities = sorted(i.slug for i in manifest.identities if i.slug not in old)
    decision.new_samples = new_samples = (manifest.rows - base_manifest.rows) / max(1, base_manifest.rows)
    if force:
        decision.train, decision.reason = True, "forced"
    elif len(decision.new_identities) >= orch.retrain_min_new_identities:
        decision.train, decision.reason = True, f"{len(decision.new_identities)} new identities"
    elif new_samples >= orch.retrain_min_new_samples:
        decision.train, decision.reason = True, f"{new_samples:.0%} more samples"
    else:
        decision.reason = (
            f"{len(decision.new_identities)} new identities and {new_samples:.0%} more samples "
            f"than {base.version_id} (model {base.model_id}): below the retraining thresholds"
        )
    return decision
