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

The work is done by `facescale.app.orchestration`.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from facescale_dags import DAG_DEFAULTS, curate_and_publish, run_key, scrape, scrape_params, settings

from facescale.app import orchestration as orch

log = logging.getLogger(__name__)


@dag(
    dag_id="facescale_add_identities",
    schedule=None,
    tags=["facescale", "dataset", "identities"],
    doc_md=__doc__,
    params={
        "names": Param(
            [], type="array", items={"type": "string", "minLength": 1}, minItems=1, description="people to add"
        ),
        **scrape_params(),
    },
    **DAG_DEFAULTS,
)
def facescale_add_identities() -> None:
    @task
    def register() -> list[str]:
        added = orch.register_identities(settings(), get_current_context()["params"]["names"])
        for entry in added:
            log.info("%s %s (label %d)", "added" if entry.new else "already registered", entry.name, entry.label)
        return [entry.name for entry in added]

    @task
    def plan(names: list[str]) -> list[dict[str, Any]]:
        params = get_current_context()["params"]
        batches = orch.plan_night(
            settings(), run_key(by_date=False), prefix="manual", names=names,
            per_keyword=params["images_per_keyword"], batch_size=params["batch_size"],
        ).batches
        return [b.model_dump(mode="json") for b in batches]

    # manual runs: one key per run (its run id), so adding people twice a day makes two versions
    curate_and_publish(scrape.expand(batch=plan(register())), "manual", by_date=False)  # type: ignore[arg-type]  # XComArg


facescale_add_identities()
