"""Run one DAG with ``dag.test()`` in this process and print what happened as JSON (used by the tests).

Usage: python _run_dag.py DAG_ID LOGICAL_DATE|none CONF_JSON. AIRFLOW_HOME (with a migrated
SQLite database), the dags folder and the FACESCALE_* settings come from the environment.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path


def main() -> None:
    dag_id, when, conf = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    from airflow import settings
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    from facescale.app.orchestration import SCRAPE_POOL
    from facescale.config import load_settings

    Pool.create_or_update_pool(SCRAPE_POOL, load_settings().orchestration.scrape_pool_slots, "scrape tasks", False)
    # as `airflow dags test` loads the dags-folder bundle (the folder goes on sys.path: facescale_dags)
    bag = BundleDagBag(settings.DAGS_FOLDER, bundle_path=Path(settings.DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(dag_id)
    logical_date = None if when == "none" else datetime.fromisoformat(when)
    started = time.monotonic()
    run = dag.test(logical_date=logical_date, run_conf=conf)
    seconds = time.monotonic() - started
    with create_session() as session:
        tis = run.get_task_instances(session=session)
        states = {}
        for ti in tis:
            key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            states[key] = str(ti.state)
        names = {a.id: a.name for a in session.query(AssetModel)}
        events = [
            {"asset": names[e.asset_id], "extra": e.extra, "dag_id": e.source_dag_id, "run_id": e.source_run_id}
            for e in session.query(AssetEvent).order_by(AssetEvent.id)
        ]
        queued = [q.target_dag_id for q in session.query(AssetDagRunQueue)]
        xcom = {}
        for ti in tis:
            if ti.map_index < 0 and ti.task_id in ("curate", "decide", "evaluate", "publish", "plan"):
                xcom[ti.task_id] = ti.xcom_pull(task_ids=ti.task_id, session=session) if ti.state else None
    print("RESULT " + json.dumps({
        "state": str(run.state),
        "run_id": run.run_id, "tasks": states, "events": events, "queued": queued,
        "xcom": xcom, "seconds": seconds,
    }, default=str))


if __name__ == "__main__":
    main()
