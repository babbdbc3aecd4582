# Sourced by scripts/demo.sh and scripts/airflow.sh: the embedded default's settings for
# Airflow (SQLite under var/airflow, the project's dags/) and for facescale (storage in
# var/demo, the demo keywords, small curation and training configurations for 2 cores).
# Every value can be overridden from the environment.
# `airflow standalone` starts its components as `airflow ...` from PATH: the project's venv first.
export PATH="$PWD/.venv/bin:$PATH"
export AIRFLOW_HOME=${AIRFLOW_HOME:-$PWD/var/airflow}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$PWD/dags}
export AIRFLOW__CORE__LOAD_EXAMPLES=${AIRFLOW__CORE__LOAD_EXAMPLES:-False}
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-False}
export AIRFLOW__API__PORT=${AIRFLOW__API__PORT:-8080}
# LocalExecutor runs this many tasks at once (one worker process each): sized for a small machine
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-4}
# task processes report to the api-server's Execution API: follow its port
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://localhost:$AIRFLOW__API__PORT/execution/}

export FACESCALE_STORAGE__ROOT=${FACESCALE_STORAGE__ROOT:-$PWD/var/demo}
export FACESCALE_ORCHESTRATION__KEYWORDS_FILE=${FACESCALE_ORCHESTRATION__KEYWORDS_FILE:-${FACESCALE_DEMO_KEYWORDS:-$PWD/examples/demo-keywords.txt}}
export FACESCALE_ORCHESTRATION__NEW_PER_NIGHT=${FACESCALE_ORCHESTRATION__NEW_PER_NIGHT:-40}
export FACESCALE_ORCHESTRATION__BATCH_SIZE=${FACESCALE_ORCHESTRATION__BATCH_SIZE:-8}
export FACESCALE_ORCHESTRATION__WORK_DIR=${FACESCALE_ORCHESTRATION__WORK_DIR:-$PWD/var/demo-runs}
export FACESCALE_SCRAPER__PER_KEYWORD=${FACESCALE_SCRAPER__PER_KEYWORD:-${FACESCALE_DEMO_PER_KEYWORD:-60}}
# curation and training sized for a 2-core machine (shared with `make cluster`)
source "$PWD/scripts/small-machine.sh"

FACESCALE_DEMO_PHOTOS=${FACESCALE_DEMO_PHOTOS:-$PWD/../shared/data/lfw-dev}

# start_demo_web LOG: start `facescale demo-web` on a free port in the background; sets
# demo_url and demo_web_pid (the caller stops it).
start_demo_web() {
  local log=$1
  [ -d "$FACESCALE_DEMO_PHOTOS" ] || { echo "demo photos not found at $FACESCALE_DEMO_PHOTOS (set FACESCALE_DEMO_PHOTOS)" >&2; return 1; }
  .venv/bin/facescale demo-web "$FACESCALE_DEMO_PHOTOS" --port 0 > "$log" 2>&1 &
  demo_web_pid=$!
  demo_url=
  for _ in $(seq 1 200); do
    demo_url=$(sed -n 's/^listening on //p' "$log")
    [ -n "$demo_url" ] && break
    kill -0 "$demo_web_pid" 2>/dev/null || { cat "$log" >&2; return 1; }
    sleep 0.1
  done
  [ -n "$demo_url" ] || { echo "demo web did not start" >&2; return 1; }
}

# prepare_airflow: migrate the metadata database and create the scrape pool (idempotent).
prepare_airflow() {
  mkdir -p "$AIRFLOW_HOME"
  .venv/bin/airflow db migrate > "$AIRFLOW_HOME/db-migrate.log" 2>&1 || { tail -20 "$AIRFLOW_HOME/db-migrate.log" >&2; return 1; }
  local slots
  slots=$(.venv/bin/facescale config show 2>/dev/null | sed -n 's/^ *scrape_pool_slots: *//p')
  .venv/bin/airflow pools set facescale_scrape "${slots:-2}" "facescale: concurrent scrape tasks (browsers + downloads)" > /dev/null
}
