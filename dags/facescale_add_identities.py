"""
### facescale_add_identities: add people by hand

Trigger with the names to add, from the UI's "Trigger" form or the CLI:
`airflow dags trigger facescale_add_identities --conf '{"names": ["Ada Lovelace", "Alan Turing"]}'`.

1. **register** the names in the identity registry (stable labels; a removed name is restored).
2. **plan** one scrape batch per `batch_size` names (stored, so a rerun scrapes the same batches).
3. **scrape** them (mapped, in the `facescale_scrape` pool, retried with backoff) into RAW
   runs `manual-<run>-bNN`.
4. **curate** on Ray into version `manual-<run>`, **validate** (Great Expectations) and
   **publish** the `facescale_dataset` Asset event, which schedules `facescale_retrain`.

The work is done by `facescale.orchestration`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Param, dag, get_current_context, task

from facescale import orchestration as orch

log = logging.getLogger(__name__)
DATASET = Asset(name=orch.DATASET_ASSET, uri=orch.DATASET_ASSET_URI)
NETWORK_RETRIES: dict[str, Any] = {
    "retries": 4,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=20),
}


def _settings() -> Any:
    from facescale.config import load_settings

    return load_settings()


def _key() -> str:
    context = get_current_context()
    return orch.run_key(None, context["run_id"])  # manual runs: one key per run


@dag(
    dag_id="facescale_add_identities",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["facescale", "dataset", "identities"],
    doc_md=__doc__,
    default_args={"owner": "facescale", "retries": 1, "retry_delay": timedelta(minutes=2)},
    params={
        "names": Param(
            [], type="array", items={"type": "string", "minLength": 1}, minItems=1, description="people to add"
        ),
        "engine": Param(
            None, type=["null", "string"], enum=[None, "demo", "bing"], description="default: scraper.engine"
        ),
        "base_url": Param(None, type=["null", "string"], description="engine base URL (the demo web's URL)"),
        "images_per_keyword": Param(
            None, type=["null", "integer"], minimum=1, description="default: scraper.per_keyword"
        ),
        "batch_size": Param(None, type=["null", "integer"], minimum=1, description="names per scrape task"),
    },
)
def facescale_add_identities() -> None:
    @task
    def register() -> list[str]:
        added = orch.register_identities(_settings(), get_current_context()["params"]["names"])
        for entry in added:
            log.info("%s %s (label %d)", "added" if entry["new"] else "already registered", entry["name"],
                     entry["label"])
        return [entry["name"] for entry in added]

    @task
    def plan(names: list[str]) -> list[dict[str, Any]]:
        params = get_current_context()["params"]
        batches = orch.plan_night(
            _settings(), _key(), prefix="manual", names=names,
            per_keyword=params["images_per_keyword"], batch_size=params["batch_size"],
        ).batches
        return [vars(b) for b in batches]

    @task(pool=orch.SCRAPE_POOL, **NETWORK_RETRIES)
    def scrape(batch: dict[str, Any]) -> dict[str, Any]:
        params = get_current_context()["params"]
        return orch.scrape_batch(
            _settings(), orch.Batch(**batch), engine=params["engine"], base_url=params["base_url"]
        )

    @task(execution_timeout=timedelta(hours=6))
    def curate() -> dict[str, Any]:
        return orch.curate_version(_settings(), f"manual-{_key()}")

    @task.short_circuit
    def created(curated: dict[str, Any]) -> bool:
        log.info("curated: %s", curated["message"] or f"version {curated['version_id']}")
        return bool(curated["created"])

    @task
    def validate(curated: dict[str, Any]) -> dict[str, Any]:
        return orch.validate_version(_settings(), curated["version_id"])

    @task(outlets=[DATASET])
    def publish(validated: dict[str, Any]) -> dict[str, Any]:
        extra = orch.dataset_event(_settings(), validated["version_id"])
        get_current_context()["outlet_events"][DATASET].extra = extra
        return extra

    curated = curate()
    validated = validate(curated)
    scrape.expand(batch=plan(register())) >> curated
    created(curated) >> validated
    publish(validated)


facescale_add_identities()
