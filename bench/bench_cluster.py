"""The scaled-out stack's own figures, measured on the running stack (`make cluster`).

1. Task queue-to-start latency under Celery: for every task instance the scheduler has run
   (REST API), median / p90 / max per queue of `queued_when - scheduled_when` (the
   scheduler, pool slots) and of `start_date - queued_when` (Celery's delivery and the task
   process starting on the worker). Run it after the cluster tier (`make test-cluster`) so
   there are nights to read.
2. How curation's work spreads over the Ray nodes: the same lfw-dev people ingested into a
   fresh root on the stack's S3 endpoint and curated with `facescale curate` on the cluster,
   while every process of each Ray worker node (its network namespace's, or its session's on
   loopback) is sampled from /proc: CPU seconds per node and the crop actors each node ran.
   The ratio is node 1's CPU seconds over node 2's (1.0: an even spread).
3. Scrape throughput with 1 vs 2 Grid nodes: the same names scraped by the CLI through the
   Grid into fresh roots, as many browser workers as the Grid has slots (2 per node), with
   the second node stopped and then started again, alternated (1, 2, 2, 1); results/s and
   the ratio of the medians. On this 2-core machine the browsers compete for the same cores, so this shows
   the Grid spreading sessions more than it shows capacity.

Run:  eval "$(scripts/cluster.sh env)"; .venv/bin/python bench/bench_cluster.py [--people 6] [--names 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "cluster"))  # the stack seen from outside
from stack import airflow_session, cpu_seconds, grid_nodes, process_title, ray_node_processes

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SH = REPO / "scripts" / "cluster.sh"
FACESCALE = Path(sys.executable).with_name("facescale")
LFW_DEV = REPO.parent / "shared" / "data" / "lfw-dev"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STAMP = f"{int(time.time())}"
SLOTS_PER_NODE = 2  # scripts/cluster.sh: max-sessions of a Grid node


def _spread(seconds: list[float]) -> str:
    seconds = sorted(seconds)
    p90 = seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))]
    return f"median {statistics.median(seconds):.2f} s, p90 {p90:.2f} s, max {seconds[-1]:.2f} s"


def queue_latency() -> None:
    base, session = airflow_session(os.environ)
    waits: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for dag in ("facescale_nightly", "facescale_add_identities", "facescale_retrain"):
        runs = session.get(f"{base}/api/v2/dags/{dag}/dagRuns?limit=100", timeout=30).json().get("dag_runs", [])
        for run in runs:
            tasks = session.get(
                f"{base}/api/v2/dags/{dag}/dagRuns/{run['dag_run_id']}/taskInstances?limit=200", timeout=30
            ).json()["task_instances"]
            for task in tasks:
                when = {
                    k: datetime.fromisoformat(task[k])
                    for k in ("scheduled_when", "queued_when", "start_date")
                    if task.get(k)
                }
                if len(when) == 3:
                    queue = waits[task["queue"]]
                    queue["scheduled"].append((when["queued_when"] - when["scheduled_when"]).total_seconds())
                    queue["queued"].append((when["start_date"] - when["queued_when"]).total_seconds())
    if not waits:
        print("queue-to-start: no task instances yet (run `make test-cluster` first)")
        return
    for queue, phases in sorted(waits.items()):
        print(f"queue {queue}, {len(phases['queued'])} task instances (last try of each):")
        print(f"  scheduled -> queued (scheduler, pools): {_spread(phases['scheduled'])}")
        print(f"  queued -> started (Celery, task start): {_spread(phases['queued'])}")


def ray_spread(people: int) -> None:
    folders = sorted((p for p in LFW_DEV.iterdir() if p.is_dir()), key=lambda p: (-len(list(p.iterdir())), p.name))
    root = f"s3://facescale/bench-spread-{STAMP}"
    env = {**os.environ, "FACESCALE_STORAGE__ROOT": root}
    with tempfile.TemporaryDirectory() as tmp:
        for folder in folders[:people]:
            (Path(tmp) / folder.name).symlink_to(folder)
        subprocess.run([str(FACESCALE), "ingest", tmp, "--run-id", "people"], env=env, check=True, capture_output=True)
        photos = sum(len(list(f.iterdir())) for f in folders[:people])
        cpu: dict[int, dict[int, float]] = {1: {}, 2: {}}
        actors: dict[int, set[int]] = {1: set(), 2: set()}
        started = time.perf_counter()
        curating = subprocess.Popen(
            [str(FACESCALE), "curate", "--version-id", "v1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        baseline: dict[int, dict[int, float]] = {1: {}, 2: {}}
        for node in (1, 2):  # what the node's long-lived processes had used before the run
            for process in ray_node_processes(os.environ, node):
                if (used := cpu_seconds(process, CLOCK_TICKS)) is not None:
                    baseline[node][process] = used
        while curating.poll() is None:
            for node in (1, 2):
                for process in ray_node_processes(os.environ, node):
                    if (used := cpu_seconds(process, CLOCK_TICKS)) is None:
                        continue
                    used -= baseline[node].get(process, 0.0)
                    cpu[node][process] = max(cpu[node].get(process, 0.0), used)
                    if "CropPreparer" in process_title(process):
                        actors[node].add(process)
            time.sleep(0.5)
        wall = time.perf_counter() - started
        out, err = curating.communicate()
        if curating.returncode != 0:
            raise SystemExit(f"curate failed: {err[-2000:]}")
    totals = {node: sum(values.values()) for node, values in cpu.items()}
    print(f"curation of {photos} photos ({people} people) on the Ray cluster: {wall:.1f} s wall; {out.strip()}")
    for node in (1, 2):
        print(f"  node {node}: {totals[node]:.1f} CPU-s, {len(actors[node])} crop actor process(es)")
    if totals[2] > 0:
        print(f"  spread: node 1 / node 2 CPU-seconds = {totals[1] / totals[2]:.2f} (1.0 is even)")


def _with_grid_nodes(count: int) -> None:
    if count == 1:
        subprocess.run([str(CLUSTER_SH), "stop-role", "grid-node-2"], check=True, capture_output=True)
    else:
        subprocess.run([str(CLUSTER_SH), "start-role", "grid"], check=True, capture_output=True)
    deadline = time.monotonic() + 300
    while len(grid_nodes(os.environ["FACESCALE_SCRAPER__SELENIUM_GRID_URL"])) != count:
        if time.monotonic() > deadline:
            raise SystemExit(f"the Grid did not settle on {count} node(s)")
        time.sleep(2)


def _scrape(names: list[str], tag: str, workers: int) -> tuple[float, int]:
    env = {**os.environ, "FACESCALE_STORAGE__ROOT": f"s3://facescale/bench-grid-{STAMP}-{tag}"}
    args = [a for name in names for a in ("--identity", name)]
    started = time.perf_counter()
    done = subprocess.run(
        [str(FACESCALE), "scrape", *args, "--workers", str(workers), "--run-id", "bench"],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"scrape failed: {done.stderr[-2000:]}")
    runs = json.loads(
        subprocess.run(
            [str(FACESCALE), "runs", "list", "--json"], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    return wall, sum(run["rows"] for run in runs)


def grid_scaling(names: int) -> None:
    keywords = (REPO / "examples" / "demo-keywords.txt").read_text().splitlines()
    people = [line for line in keywords if line.strip() and not line.startswith("#")][:names]  # 60 results each
    rates: dict[int, list[float]] = {1: [], 2: []}
    try:
        for i, count in enumerate((1, 2, 2, 1)):
            _with_grid_nodes(count)
            wall, rows = _scrape(people, f"{count}-{i}", SLOTS_PER_NODE * count)
            rates[count].append(rows / wall)
            print(f"  {count} Grid node(s): {rows} results in {wall:.1f} s = {rows / wall:.1f} results/s")
    finally:
        _with_grid_nodes(2)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(
        f"scrape throughput, {len(people)} names, {SLOTS_PER_NODE} browsers per node: "
        f"1 node {one:.1f}, 2 nodes {two:.1f} results/s = {two / one:.2f}x"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=6, help="lfw-dev people (most photos first) for the Ray spread")
    parser.add_argument("--names", type=int, default=8, help="names scraped per Grid round (demo keywords)")
    parser.add_argument("--only", choices=["latency", "spread", "grid"], action="append", help="run only these parts")
    args = parser.parse_args(argv)
    if "FACESCALE_CURATION__RAY_ADDRESS" not in os.environ:
        raise SystemExit('the stack\'s environment is not set: eval "$(scripts/cluster.sh env)"')
    parts = args.only or ["latency", "spread", "grid"]
    if "latency" in parts:
        queue_latency()
    if "spread" in parts:
        ray_spread(args.people)
    if "grid" in parts:
        grid_scaling(args.names)


if __name__ == "__main__":
    main()
