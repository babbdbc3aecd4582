"""`ray start` without a Ray Client server; every other flag as `ray start` takes it.

Ray 2.60 starts a Ray Client server (it runs code for whoever connects) on a head node whenever
its gRPC dependency is installed, and has no flag to turn it off (``--ray-client-server-port``
only moves it). facescale never uses Ray Client (Ray Data does not run under it: curation
connects to the GCS address), so both deployments start their Ray nodes through this:

    python deploy/ray_start.py start --head --port 6379 ...
"""

import sys

import ray.scripts.scripts as scripts


def _no_client() -> ImportError:
    return ImportError("Ray Client is off in facescale deployments (docs/security.md)")


scripts.get_ray_client_dependency_error = _no_client  # what `ray start` asks before starting the server

if __name__ == "__main__":
    sys.exit(scripts.main())
