"""
### facescale_retrain: retrain the identity model when the dataset grows

Scheduled on the `facescale_dataset` Asset (published by `facescale_nightly` and
`facescale_add_identities`); can be triggered by hand (`force`, `version_id` Params).

1. **decide**: the dataset version of the triggering Asset event (by hand: the `version_id`
   Param, else the latest event). It trains when the version adds
   `orchestration.retrain_min_new_identities` identities or `retrain_min_new_samples` more
   samples than the version of the newest model that passed the quality bar, when no model
   has passed it yet, or when `force` is set; otherwise the run stops here (skipped).
2. **train** Inception V3 (warm-started from that model), register it and calibrate it for
   serving (thresholds, enrolled galleries, the default backend: measured on the version's
   validation photos and stored with the model).
3. **evaluate** on the version's test split: the Inception V3 (metrics and plots stored with
   the model) and what the default backend answers on the test photos.
4. **quality_bar**: test top-1 >= `orchestration.min_test_top1`, the default backend right on
   >= `orchestration.min_served_right` of the test photos, and a warm start no worse than the
   model it replaces on that model's identities; else the run stops here.
5. **publish**: the `facescale_model` Asset event, with the model in its extra.

The work is done by `facescale.app.orchestration`; TensorFlow is imported only inside train/evaluate,
which run on the `gpu` Celery queue in the scaled-out deployment (docker/).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from facescale_dags import DAG_DEFAULTS, DATASET, MODEL, run_key, settings

from facescale.app import orchestration as orch

log = logging.getLogger(__name__)


@dag(
    dag_id="facescale_retrain",
    schedule=[DATASET],
    tags=["facescale", "model", "train"],
    doc_md=__doc__,
    params={
        "force": Param(False, type="boolean", description="train even if the version adds little"),
        "version_id": Param(None, type=["null", "string"], description="by hand: the version to train on"),
    },
    **DAG_DEFAULTS,
)
def facescale_retrain() -> None:
    @task.short_circuit(inlets=[DATASET])
    def decide() -> dict[str, Any] | None:
        context = get_current_context()
        version = context["params"]["version_id"]
        if version is None:
            triggering = [e for events in (context.get("triggering_asset_events") or {}).values() for e in events]
            if triggering:
                version = (triggering[-1].extra or {}).get("version_id")
            else:  # by hand without a version: the latest published one
                events = context["inlet_events"][DATASET]
                version = (events[-1].extra or {}).get("version_id") if len(events) else None
        decision = orch.retrain_decision(settings(), version, force=context["params"]["force"])
        log.info("version %s: %s (%s)", decision.version_id, "train" if decision.train else "skip", decision.reason)
        return decision.model_dump(mode="json") if decision.train else None

    @task(queue=orch.TRAINING_QUEUE, execution_timeout=timedelta(hours=24))
    def train(decision: dict[str, Any]) -> dict[str, Any]:
        return orch.train_model(settings(), orch.Decision.model_validate(decision), run_key()).model_dump(mode="json")

    @task(queue=orch.TRAINING_QUEUE)
    def evaluate(trained: dict[str, Any]) -> dict[str, Any]:
        model_id = orch.Trained.model_validate(trained).model_id
        return orch.evaluate_model(settings(), model_id, run_key()).model_dump(mode="json")

    @task.short_circuit
    def quality_bar(evaluation: dict[str, Any]) -> bool:
        result = orch.Evaluated.model_validate(evaluation)
        log.info(
            "model %s: test top-1 %.4f (bar %.4f); the %s backend answers %s of the test photos right (bar %.4f): %s",
            result.model_id, result.top1, result.min_test_top1, result.served_backend,
            "-" if result.served_right is None else f"{result.served_right:.4f}", result.min_served_right,
            "passed" if result.passed else "not published",
        )
        return result.passed

    @task(outlets=[MODEL])
    def publish(evaluation: dict[str, Any]) -> dict[str, Any]:
        extra = orch.model_event(settings(), orch.Evaluated.model_validate(evaluation).model_id).model_dump(mode="json")
        get_current_context()["outlet_events"][MODEL].extra = extra
        return extra

    evaluation = evaluate(train(decide()))  # type: ignore[arg-type]  # XComArg
    quality_bar(evaluation) >> publish(evaluation)  # type: ignore[arg-type]  # XComArg


facescale_retrain()
