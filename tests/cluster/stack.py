"""Looking at the native scaled-out stack (`make cluster`, scripts/cluster.sh) from outside:
a REST API session on its Airflow, the processes of one of its Ray worker nodes and the
slots of its Selenium Grid. Used by the cluster test tier and bench/bench_cluster.py.

The stack's environment (``eval "$(scripts/cluster.sh env)"``) says where everything is:
``AIRFLOW_HOME`` (its parent is the stack's state directory, with the pid files),
``AIRFLOW__API__PORT`` and ``FACESCALE_SCRAPER__SELENIUM_GRID_URL``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

NETNS_PREFIX = "facescale-ray-"  # scripts/cluster.sh: the network namespace of Ray worker node N


def airflow_session(env: Mapping[str, str]) -> tuple[str, requests.Session]:
    """(base URL, a session logged in as the stack's admin) for Airflow's REST API."""
    home = Path(env["AIRFLOW_HOME"])
    password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    base = f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}"
    token = requests.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=30)
    token.raise_for_status()
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return base, session


def role_pid(env: Mapping[str, str], role: str) -> int:
    """The pid (and process group, and session) of a role of the stack, from its pid file."""
    return int((Path(env["AIRFLOW_HOME"]).parent / "pids" / f"{role}.pid").read_text())


def _stat_fields(process: int) -> list[str] | None:
    """/proc/PID/stat after the command name: state, ppid, pgrp, session, ..., utime, stime, ..."""
    try:
        return Path(f"/proc/{process}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def ray_node_processes(env: Mapping[str, str], node: int) -> list[int]:
    """Every process of Ray worker node ``node``: its network namespace's, or its session's on loopback."""
    namespace = f"{NETNS_PREFIX}{node}"
    if Path(f"/run/netns/{namespace}").exists():
        out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=True)
        return [int(p) for p in out.stdout.split()]
    leader = str(role_pid(env, f"ray-worker-{node}"))
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) and fields[3] == leader:
            found.append(int(entry.name))
    return found


def process_title(process: int) -> str:
    """A process's command line (a Ray worker's title, e.g. ``ray::MapWorker(...)``); "" once it is gone."""
    try:
        return Path(f"/proc/{process}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_seconds(process: int, clock_ticks: int) -> float | None:
    """User + system CPU time of a process so far; None once it is gone."""
    fields = _stat_fields(process)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / clock_ticks


@dataclass(frozen=True)
class GridNode:
    uri: str
    slots: int
    busy: int  # slots holding a browser session


def grid_nodes(grid_url: str) -> list[GridNode]:
    """The Grid's nodes that are up, as the hub sees them now."""
    status = requests.get(f"{grid_url}/status", timeout=10).json()
    return [
        GridNode(n["uri"], len(n["slots"]), sum(s["session"] is not None for s in n["slots"]))
        for n in status["value"]["nodes"]
        if n["availability"] == "UP"
    ]
