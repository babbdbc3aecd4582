"""The running stack's listening sockets against deploy/exposure.yaml, and every credential-less caller refused.

Each listener of the stack's processes (found by their sessions: scripts/cluster.sh starts every role in
one) must belong to a role of the allow-list, on the addresses it allows; then, per kind of
authentication the allow-list names, a caller without credentials is tried and must be refused:
Redis answers NOAUTH, Postgres refuses a login without a password, the Grid and Airflow's API answer
401, Airflow's log servers 403, and Ray's ports are behind the nftables table that admits only
loopback and the stack's bridge. No Ray Client server runs.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from .stack import role_pid

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
ALLOWED = yaml.safe_load((REPO / "deploy" / "exposure.yaml").read_text())["native"]
SS_PROCESS = re.compile(r'\("([^"]*)",pid=(\d+),fd=\d+\)')


@dataclass(frozen=True)
class Listener:
    role: str
    address: str
    port: int
    process: str


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def _roles(env: Mapping[str, str]) -> dict[int, str]:
    """Session id -> role, from the stack's pid files (each role is the leader of its session)."""
    pids = Path(env["AIRFLOW_HOME"]).parent / "pids"
    return {int(p.read_text()): p.stem for p in pids.glob("*.pid")}


def _listeners(env: Mapping[str, str]) -> list[Listener]:
    sessions = _roles(env)
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        local = fields[3]
        address, _, port = local.rpartition(":")
        for name, pid in SS_PROCESS.findall(line):
            role = sessions.get(_session(int(pid)) or -1)
            if role is not None:
                found.append(Listener(role, address.strip("[]"), int(port), name))
    return found


def _rule(role: str) -> dict[str, str]:
    for pattern, rule in ALLOWED.items():
        if fnmatch.fnmatch(role, pattern):
            return rule
    raise AssertionError(f"role {role} is not in deploy/exposure.yaml")


def _loopback(address: str) -> bool:
    if address == "*":  # every interface, as ss shows it
        return False
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _bridge(env: Mapping[str, str]) -> str:
    ray_head = env["FACESCALE_CURATION__RAY_ADDRESS"].rpartition(":")[0]
    return ray_head  # the stack's own address: the bridge (netns) or a loopback address


@pytest.fixture(scope="module")
def listeners(env: Mapping[str, str]) -> list[Listener]:
    found = _listeners(env)
    assert found, "no listener of the stack found: is it up (make cluster)?"
    return found


def test_every_listener_is_on_the_allow_list(env: Mapping[str, str], listeners: list[Listener]) -> None:
    bridge = _bridge(env)
    wrong = []
    for listener in listeners:
        rule = _rule(listener.role)
        where = rule["listen"]
        ok = (where == "any" or _loopback(listener.address)
              or (where == "stack" and listener.address == bridge))
        if not ok:
            wrong.append(listener)
    assert not wrong, f"listeners beyond their allowed addresses (deploy/exposure.yaml): {wrong}"
    assert {"postgres", "redis", "s3", "grid-hub", "ray-head", "airflow-api-server"} <= {x.role for x in listeners}


def test_no_ray_client_server_runs(env: Mapping[str, str]) -> None:
    head = role_pid(env, "ray-head")
    titles = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _session(int(entry.name)) == head:
            try:
                titles.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    assert any("gcs_server" in t for t in titles)  # the head's processes were found
    assert not [t for t in titles if "ray.util.client.server" in t]


def test_redis_and_postgres_refuse_a_caller_without_the_password(env: Mapping[str, str]) -> None:
    redis_port = int(env["AIRFLOW__CELERY__BROKER_URL"].rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", redis_port), timeout=10) as conn:
        conn.sendall(b"PING\r\nCONFIG GET requirepass\r\n")
        reply = conn.recv(4096)
    assert reply.startswith(b"-NOAUTH"), reply
    psycopg2 = pytest.importorskip("psycopg2")
    url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    for password in (None, "wrong"):
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(host="127.0.0.1", port=port, user="facescale", dbname="airflow", password=password,
                             connect_timeout=10)
    with psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://")) as conn:  # the stack's own login
        assert conn.server_version > 0


def test_http_roles_refuse_a_caller_without_credentials(env: Mapping[str, str],
                                                        listeners: list[Listener]) -> None:
    grid = env["FACESCALE_SCRAPER__SELENIUM_GRID_URL"]
    bare = re.sub(r"//[^@/]*@", "//", grid)
    assert requests.get(f"{bare}/status", timeout=10).status_code == 401
    assert requests.get(f"{grid}/status", timeout=10).status_code == 200
    api = f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}"
    assert requests.get(f"{api}/api/v2/dags", timeout=10).status_code == 401
    assert requests.get(f"{api}/facescale/queue", timeout=10).status_code == 401  # the review view (a plugin)
    assert requests.post(f"{api}/facescale/api/exclude", json={"identity_slug": "x", "image_id": "y"},
                         timeout=10).status_code == 401
    log_servers = {x.port for x in listeners if _rule(x.role)["auth"] == "token" and x.role != "airflow-api-server"}
    assert log_servers, "no Airflow log server found"
    for port in log_servers:
        answer = requests.get(f"http://127.0.0.1:{port}/log/dag_id=x/run_id=y/task_id=z/attempt=1.log", timeout=10)
        assert answer.status_code == 403, port


def test_rays_ports_admit_only_the_stacks_networks(env: Mapping[str, str],
                                                   listeners: list[Listener]) -> None:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("the nftables rules need root and nft (scripts/cluster.sh warns and runs without them)")
    table = json.loads(subprocess.run(["nft", "-j", "list", "table", "inet", "facescale"], capture_output=True,
                                      text=True, check=True).stdout)
    dropped: set[int] = set()
    for item in table["nftables"]:
        rule = item.get("rule")
        if not rule or not any("drop" in e for e in rule["expr"]):
            continue
        for expr in rule["expr"]:
            right = expr.get("match", {}).get("right")
            if isinstance(right, dict) and "set" in right:
                for value in right["set"]:
                    if isinstance(value, int):
                        dropped.add(value)
                    elif isinstance(value, dict) and "range" in value:
                        low, high = value["range"]
                        dropped.update(range(low, high + 1))
    ray = [x for x in listeners if x.role.startswith("ray-") and not _loopback(x.address)]
    assert ray, "no Ray listener found"
    assert not [x for x in ray if x.port not in dropped], "Ray ports the firewall does not cover"
