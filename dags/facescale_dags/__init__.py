"""Wiring shared by the facescale DAG files: Assets, defaults, Params, run keys and the dataset tasks.

Not a DAG file: `dags/.airflowignore` keeps the DAG processor from parsing this package, and
the DAG files import it by name because Airflow 3 puts the DAG bundle's folder (`dags/`) on
``sys.path`` wherever it parses them (DAG processor, task runner, `airflow dags test`). Like
the DAG files it imports only airflow.sdk and `facescale.app.orchestration` at parse time; the
settings are loaded inside the tasks.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Param, TriggerRule, get_current_context, task

from facescale.app import orchestration as orch
from facescale.scraper.engines import ENGINES

log = logging.getLogger(__name__)

DATASET = Asset(name=orch.DATASET_ASSET, uri=orch.DATASET_ASSET_URI)
MODEL = Asset(name=orch.MODEL_ASSET, uri=orch.MODEL_ASSET_URI)

# The @dag arguments every facescale DAG shares (each adds its id, schedule, tags, docs and Params).
DAG_DEFAULTS: dict[str, Any] = {
    "start_date": datetime(2026, 1, 1, tzinfo=UTC),
    "catchup": False,
    "max_active_runs": 1,
    "default_args": {"owner": "facescale", "retries": 1, "retry_delay": timedelta(minutes=2)},
}

# Network-facing tasks (search pages, downloads): retried with exponential backoff.
NETWORK_RETRIES: dict[str, Any] = {
    "retries": 4,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=20),
}


#: One engine name or several, comma-separated (`facescale.scraper.engines.ENGINES`: light to import).
ENGINE_PATTERN = "^({0})(,({0}))*$".format("|".join(sorted(ENGINES)))


def scrape_params() -> dict[str, Param]:
    """The Params of a DAG that scrapes: engine, its base URL, images per keyword, keywords per task."""
    return {
        "engine": Param(
            None, type=["null", "string"], pattern=ENGINE_PATTERN,
            description="default: scraper.engine; several in order of preference, comma-separated "
            "(duckduckgo,bing: the next is asked for a keyword the one before blocks or runs short on)",
        ),
        "base_url": Param(None, type=["null", "string"], description="engine base URL (the demo web's URL)"),
        "images_per_keyword": Param(
            None, type=["null", "integer"], minimum=1, description="default: scraper.per_keyword"
        ),
        "batch_size": Param(None, type=["null", "integer"], minimum=1, description="keywords per scrape task"),
    }


def settings() -> Any:
    """The facescale settings, loaded inside a task (never at parse time)."""
    from facescale.config import load_settings

    return load_settings()


def run_key(*, by_date: bool = True) -> str:
    """The running DAG run's idempotency key: its logical date, or its run id (always so when not ``by_date``)."""
    context = get_current_context()
    return orch.run_key(context.get("logical_date") if by_date else None, context["run_id"])


@task(pool=orch.SCRAPE_POOL, **NETWORK_RETRIES)
def scrape(batch: dict[str, Any]) -> dict[str, Any]:
    """Scrape one planned batch into its RAW run (expand it over the plan's batches)."""
    params = get_current_context()["params"]
    scraped = orch.scrape_batch(
        settings(), orch.Batch.model_validate(batch), engine=params["engine"], base_url=params["base_url"]
    )
    return scraped.model_dump(mode="json")


def curate_and_publish(scraped: Any, prefix: str, *, by_date: bool) -> None:
    """Wire ``scraped`` >> curate -> created -> validate -> publish: version ``<prefix>-<run key>``.

    ``curate`` runs unless a scrape task failed (a night with nothing to scrape still curates);
    ``created`` short-circuits when no version was made, so nothing is validated or announced;
    ``publish`` emits the `facescale_dataset` Asset event that schedules `facescale_retrain`.
    """

    @task(trigger_rule=TriggerRule.NONE_FAILED, execution_timeout=timedelta(hours=6))
    def curate() -> dict[str, Any]:
        return orch.curate_version(settings(), f"{prefix}-{run_key(by_date=by_date)}").model_dump(mode="json")

    @task.short_circuit
    def created(curated: dict[str, Any]) -> bool:
        """Go on only with a version made by this run: nothing new means no version and no event."""
        result = orch.Curated.model_validate(curated)
        log.info("curated: %s", result.message or f"version {result.version_id}")
        return result.created

    @task
    def validate(curated: dict[str, Any]) -> dict[str, Any]:
        version_id = orch.Curated.model_validate(curated).version_id
        if version_id is None:  # `created` lets only a made version through
            raise ValueError("no version to validate")
        return orch.validate_version(settings(), version_id).model_dump(mode="json")

    @task(outlets=[DATASET])
    def publish(validated: dict[str, Any]) -> dict[str, Any]:
        version_id = orch.Validated.model_validate(validated).version_id
        extra = orch.dataset_event(settings(), version_id).model_dump(mode="json")
        get_current_context()["outlet_events"][DATASET].extra = extra
        return extra

    curated = curate()
    validated = validate(curated)  # type: ignore[arg-type]  # XComArg
    scraped >> curated
    created(curated) >> validated  # type: ignore[arg-type]  # XComArg
    publish(validated)  # type: ignore[arg-type]  # XComArg
