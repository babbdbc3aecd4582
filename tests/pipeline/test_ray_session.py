"""`RaySession`: with no address configured, curation starts a private Ray, never a stranger's cluster.

Ray's own ``ray.init(address=None)`` joins the cluster named in its ``ray_current_cluster``
file (the last one started on the machine, by anyone) before it would start its own. The
test starts such a cluster in another process (`ray.cluster_utils.Cluster`, as a test or a
colleague's ``ray start --head`` would) and checks where a `RaySession` lands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# A cluster that stays up until its stdin closes, then reports the jobs it ran.
FOREIGN = textwrap.dedent(
    """
    import json, sys
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    print(json.dumps({"address": cluster.address}), flush=True)
    sys.stdin.read()
    ray.init(address=cluster.address, log_to_driver=False)
    jobs = [j for j in ray._private.state.jobs() if j["JobID"] != ray.get_runtime_context().get_job_id()]
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps({"other_jobs": len(jobs)}), flush=True)
    """
)

# What a curation run does with no address: a RaySession, one task, where it ran.
PROBE = textwrap.dedent(
    """
    import json
    import ray
    from facescale.pipeline.curate import RaySession

    with RaySession(None) as session:
        session.ensure()
        where = ray.get_runtime_context().gcs_address
        value = ray.get(ray.remote(lambda: 41 + 1).remote())
    print(json.dumps({"gcs_address": where, "value": value}))
    """
)


def test_no_address_starts_a_private_ray_beside_another_cluster() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    foreign = subprocess.Popen(
        [sys.executable, "-c", FOREIGN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert foreign.stdout is not None and foreign.stdin is not None
        address = json.loads(foreign.stdout.readline())["address"]
        probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
        assert probe.returncode == 0, probe.stderr[-2000:]
        ran = json.loads(probe.stdout.strip().splitlines()[-1])
        assert ran["value"] == 42
        assert ran["gcs_address"] != address  # a Ray of its own, not the cluster beside it
        foreign.stdin.close()
        report = json.loads(foreign.stdout.readline())
        assert report["other_jobs"] == 0  # nothing of ours ran on the other cluster
    finally:
        if foreign.stdin is not None and not foreign.stdin.closed:
            foreign.stdin.close()  # the cluster shuts itself down
        try:
            foreign.wait(120)
        except subprocess.TimeoutExpired:
            foreign.kill()
            foreign.wait(30)


def test_a_ray_client_address_is_refused_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Data dies under Ray Client (`ray://`) after connecting: say so up front, from either source."""
    from facescale.config import CurationSettings
    from facescale.errors import ConfigError
    from facescale.pipeline.curate import RaySession

    with pytest.raises(ValueError, match="Ray Client address"):
        CurationSettings(ray_address="ray://ray-head:10001")
    assert CurationSettings(ray_address="ray-head:6379").ray_address == "ray-head:6379"
    monkeypatch.setenv("RAY_ADDRESS", "ray://ray-head:10001")
    with pytest.raises(ConfigError, match=r"RAY_ADDRESS: .*GCS address"):
        RaySession(None).ensure()
