"""
### facescale_nightly: grow the face dataset every night

1. **plan**: tonight's keywords: the next new identities of `orchestration.keywords_file`
   (up to the `new_identities` Param), identities whose scrape never finished, and
   identities still waiting for clean photos (searched twice as deep). The plan is stored
   under `<root>/orchestration/plans/`, so a rerun of the same night scrapes the same batches.
2. **scrape**: one mapped task per keyword batch (`batch_size` Param), each its own RAW run
   `nightly-<YYYYMMDD>-bNN`, at most as many at once as the `facescale_scrape` pool has
   slots; network-facing, so retried with exponential backoff (a retry resumes the run).
3. **curate** on Ray into version `nightly-<YYYYMMDD>` (a rerun returns the committed one).
4. **validate**: the Great Expectations gate publishes the version in the store.
5. **publish**: the `facescale_dataset` Asset event, with the version in its extra;
   `facescale_retrain` is scheduled on it.

Everything is keyed by the logical date; the work is done by `facescale.orchestration`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Param, TriggerRule, dag, get_current_context, task

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
    return orch.run_key(context.get("logical_date"), context["run_id"])


@dag(
    dag_id="facescale_nightly",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["facescale", "dataset", "scrape", "curate"],
    doc_md=__doc__,
    default_args={"owner": "facescale", "retries": 1, "retry_delay": timedelta(minutes=2)},
    params={
        "engine": Param(
            None, type=["null", "string"], enum=[None, "demo", "bing"], description="default: scraper.engine"
        ),
        "base_url": Param(None, type=["null", "string"], description="engine base URL (the demo web's URL)"),
        "images_per_keyword": Param(
            None, type=["null", "integer"], minimum=1, description="default: scraper.per_keyword"
        ),
        "batch_size": Param(None, type=["null", "integer"], minimum=1, description="keywords per scrape task"),
        "new_identities": Param(None, type=["null", "integer"], minimum=0, description="new identities tonight"),
    },
)
def facescale_nightly() -> None:
    @task
    def plan() -> list[dict[str, Any]]:
        params = get_current_context()["params"]
        night = orch.plan_night(
            _settings(),
            _key(),
            new_per_night=params["new_identities"],
            per_keyword=params["images_per_keyword"],
            batch_size=params["batch_size"],
        )
        return [vars(b) for b in night.batches]

    @task(pool=orch.SCRAPE_POOL, **NETWORK_RETRIES)
    def scrape(batch: dict[str, Any]) -> dict[str, Any]:
        params = get_current_context()["params"]
        return orch.scrape_batch(
            _settings(), orch.Batch(**batch), engine=params["engine"], base_url=params["base_url"]
        )

    @task(trigger_rule=TriggerRule.NONE_FAILED, execution_timeout=timedelta(hours=6))
    def curate() -> dict[str, Any]:
        return orch.curate_version(_settings(), f"nightly-{_key()}")

    @task.short_circuit
    def created(curated: dict[str, Any]) -> bool:
        """Go on only with a version made tonight: nothing new means no version and no event."""
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
    scrape.expand(batch=plan()) >> curated
    created(curated) >> validated
    publish(validated)


facescale_nightly()
