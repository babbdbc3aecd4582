"""
### facescale_nightly: grow the face dataset every night

1. **plan**: tonight's keywords: the next new identities of `orchestration.keywords_file`
   (up to the `new_identities` Param), identities whose scrape never finished, and
   identities still waiting for clean photos (searched twice as deep, on at most
   `orchestration.max_waiting_nights` nights, and not when their last search already had every
   result the engine lists; the plan lists those given up and exhausted). The plan is stored
   under `<root>/orchestration/plans/`, so a rerun of the same night scrapes the same batches.
2. **scrape**: one mapped task per keyword batch (`batch_size` Param), each its own RAW run
   `nightly-<YYYYMMDD>-bNN`, at most as many at once as the `facescale_scrape` pool has
   slots; network-facing, so retried with exponential backoff (a retry resumes the run).
3. **curate** on Ray into version `nightly-<YYYYMMDD>` (a rerun returns the committed one).
4. **validate**: the Great Expectations gate publishes the version in the store.
5. **publish**: the `facescale_dataset` Asset event, with the version in its extra;
   `facescale_retrain` is scheduled on it.

Everything is keyed by the logical date; the work is done by `facescale.app.orchestration`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from facescale_dags import DAG_DEFAULTS, curate_and_publish, run_key, scrape, scrape_params, settings

from facescale.app import orchestration as orch


@dag(
    dag_id="facescale_nightly",
    schedule="@daily",
    tags=["facescale", "dataset", "scrape", "curate"],
    doc_md=__doc__,
    params={
        **scrape_params(),
        "new_identities": Param(None, type=["null", "integer"], minimum=0, description="new identities tonight"),
    },
    **DAG_DEFAULTS,
)
def facescale_nightly() -> None:
    @task
    def plan() -> list[dict[str, Any]]:
        params = get_current_context()["params"]
        night = orch.plan_night(
            settings(),
            run_key(),
            new_per_night=params["new_identities"],
            per_keyword=params["images_per_keyword"],
            batch_size=params["batch_size"],
        )
        return [b.model_dump(mode="json") for b in night.batches]

    curate_and_publish(scrape.expand(batch=plan()), "nightly", by_date=True)


facescale_nightly()
