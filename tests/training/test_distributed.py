"""Multi-worker training: the cluster from TF_CONFIG, per-worker input shards, two workers on localhost."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from facescale.errors import ConfigError
from facescale.training.data import CuratedInput
from facescale.training.train import Cluster, cluster_from_env

if TYPE_CHECKING:
    from conftest import Curated

TRAIN_PROC = Path(__file__).with_name("_train_proc.py")


def _tf_config(workers: list[str], index: int, chief: list[str] | None = None, kind: str = "worker") -> str:
    cluster = {"worker": workers, **({"chief": chief} if chief else {})}
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


def test_the_cluster_comes_from_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster_from_env() == Cluster(1, 0, True)
    hosts = ["localhost:1", "localhost:2", "localhost:3"]
    monkeypatch.setenv("TF_CONFIG", _tf_config(hosts, 0))
    assert cluster_from_env() == Cluster(3, 0, True)
    monkeypatch.setenv("TF_CONFIG", _tf_config(hosts, 2))
    assert cluster_from_env() == Cluster(3, 2, False)
    monkeypatch.setenv("TF_CONFIG", _tf_config(hosts[:2], 0, chief=["localhost:9"]))  # a chief job: it is the chief
    assert cluster_from_env() == Cluster(3, 1, False)
    monkeypatch.setenv("TF_CONFIG", _tf_config(hosts[:2], 0, chief=["localhost:9"], kind="chief"))
    assert cluster_from_env() == Cluster(3, 0, True)
    monkeypatch.setenv("TF_CONFIG", _tf_config(hosts, 5))
    with pytest.raises(ConfigError, match="task worker:5 is not in its cluster"):
        cluster_from_env()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG is not a valid cluster description"):
        cluster_from_env()


def test_worker_shards_partition_every_epoch(curated: Curated) -> None:
    data = CuratedInput(curated.store, curated.version_id, "train", 75, shuffle_buffer=10)
    whole = np.concatenate([y.numpy() for _, y in data.dataset(4, shuffle=True, seed=3, epoch=1)])
    parts = [
        np.concatenate([y.numpy() for _, y in data.dataset(4, shuffle=True, seed=3, epoch=1, shard=(3, i))])
        for i in range(3)
    ]
    assert [len(p) for p in parts] == [data.shard_examples((3, i)) for i in range(3)] == [8, 8, 8]
    for i, part in enumerate(parts):  # worker i gets samples i, i+3, ... of the epoch's order
        np.testing.assert_array_equal(part, whole[i::3])
    assert data.steps(4, drop_remainder=True, shards=3) == 2
    with pytest.raises(ConfigError, match="shard index 3"):
        data.shard_examples((3, 3))


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_two_workers_on_localhost_train_one_epoch_and_only_the_chief_writes(
    curated: Curated, tmp_path: Path
) -> None:
    hosts = [f"localhost:{p}" for p in _free_ports(2)]
    settings = {
        "backbone": "tiny", "image_size": 75, "batch_size": 2, "max_epochs": 1, "stop_metric": "val_loss",
        "stop_threshold": 1e-6,
    }
    out = tmp_path / "run"
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": _tf_config(hosts, index)}
        command = [
            sys.executable, str(TRAIN_PROC), curated.location.root, curated.version_id, str(out),
            "--settings", json.dumps(settings), "--max-steps", "2",
        ]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=1400) for p in procs]
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-6000:]
        assert "MultiWorkerMirroredStrategy: 2 replica(s) in all" in stderr
    chief, other = (json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs)
    assert (chief["workers"], chief["replicas"], chief["global_batch_size"], chief["steps_per_epoch"]) == (2, 2, 4, 2)
    assert chief["epochs"] == 1 and chief["stopped_by"] == "max_epochs"
    assert chief["history"] == other["history"]  # metrics are all-reduced: both saw the same
    assert chief["validation_steps"] == 1  # 6 val samples -> 3 per worker -> one batch of 2 each
    assert (out / "model.keras").is_file() and (out / "training.json").is_file()
    worker = out / "worker-1"
    assert (worker / "training.json").is_file() and not (worker / "model.keras").exists()  # state only
    assert not (worker / "labels.json").exists()
