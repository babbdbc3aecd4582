#!/usr/bin/env bash
# `make airflow`: Airflow on the embedded default, with the project's DAGs and the demo
# settings (scripts/airflow-env.sh): `airflow standalone` (api-server + scheduler +
# dag-processor + triggerer, LocalExecutor, SQLite under var/airflow), plus the demo web for
# the demo engine. It shares var/airflow and var/demo with `make demo`, so the runs that
# `make demo` made show in the UI. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/airflow-env.sh

prepare_airflow
start_demo_web "$AIRFLOW_HOME/demo-web.log"
trap 'kill $demo_web_pid 2>/dev/null || true' EXIT
# The nightly DAG's base_url Param defaults to scraper.base_url: the demo web started above.
export FACESCALE_SCRAPER__BASE_URL=${FACESCALE_SCRAPER__BASE_URL:-$demo_url}

password_file="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
cat <<INFO
== Airflow standalone with the facescale DAGs (facescale_nightly, facescale_retrain, facescale_add_identities)
   UI:        http://localhost:$AIRFLOW__API__PORT  (user: admin)
   review:    Browse -> facescale (growth, versions, identities) and Browse -> facescale review queue
              (http://localhost:$AIRFLOW__API__PORT/facescale/queue): keep / exclude photos, the next night honours them
   password:  generated on the first start into $password_file
              (print it with: python3 -c 'import json; print(json.load(open("$password_file"))["admin"])')
   AIRFLOW_HOME: $AIRFLOW_HOME (SQLite: airflow.db; task logs: logs/)
   storage root: $FACESCALE_STORAGE__ROOT; demo web: $demo_url
   DAGs are unpaused: facescale_nightly runs every night at 00:00 UTC (on the first start, last night's run
   starts at once, against the demo web); trigger more from the UI.
   Add people by hand: AIRFLOW_HOME=$AIRFLOW_HOME .venv/bin/airflow dags trigger facescale_add_identities \\
       --conf '{"names": ["Hugo Chavez"]}'   (or the UI's Trigger button)
INFO
.venv/bin/airflow standalone
