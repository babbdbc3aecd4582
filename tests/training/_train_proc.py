"""`train()` run as a child process by the training tests: logical CPU replicas, a self-kill on cue.

    python _train_proc.py ROOT VERSION OUT --settings JSON [--max-steps N] [--replicas N]
                          [--kill-at EPOCH:BATCH] [--warm-start DIR] [--leaky]

``--replicas N`` splits the CPU into N logical devices (this must happen before TensorFlow
initialises its devices, hence a fresh process) and mirrors over them.
``--kill-at E:B`` makes the process SIGKILL itself after batch B (0-based) of epoch E
(0-based): mid-epoch, with the earlier epochs committed. On success the `TrainResult` is
printed as one JSON line; logs go to stderr. ``--leaky`` runs `evaluate.leaky_baseline`
into OUT instead and prints its report. ``TF_CONFIG`` in the environment makes it a worker of
a multi-worker run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from facescale.config import TrainingSettings
from facescale.storage import StorageRoot
from facescale.training.leaky import leaky_baseline
from facescale.training.train import train


class KillAt(keras.callbacks.Callback):
    """SIGKILL this process after a given batch of a given epoch."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__()
        self.kill_epoch, self.kill_batch, self.epoch = epoch, batch, -1

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if (self.epoch, batch) == (self.kill_epoch, self.kill_batch):
            logging.getLogger(__name__).warning("killing myself at epoch %d batch %d", self.epoch, batch)
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("version")
    parser.add_argument("out")
    parser.add_argument("--settings", required=True, help="TrainingSettings as JSON")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--kill-at")
    parser.add_argument("--warm-start")
    parser.add_argument("--leaky", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    devices = None
    if args.replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas)
        devices = [f"/cpu:{i}" for i in range(args.replicas)]
    callbacks = []
    if args.kill_at:
        epoch, batch = (int(p) for p in args.kill_at.split(":"))
        callbacks.append(KillAt(epoch, batch))
    root = StorageRoot.from_uri(args.root)
    store = root.datasets
    settings = TrainingSettings(**json.loads(args.settings))
    if args.leaky:
        scratch = StorageRoot.from_uri(str(Path(args.out) / "data")).datasets
        report = leaky_baseline(store, args.version, settings, args.out, scratch=scratch,
                                max_steps_per_epoch=args.max_steps, crops=root.crops)
        print(json.dumps(report), flush=True)
        return
    result = train(
        store,
        args.version,
        settings,
        args.out,
        max_steps_per_epoch=args.max_steps,
        devices=devices,
        callbacks=callbacks,
        warm_start=args.warm_start,
        crops=root.crops,
    )
    print(json.dumps(result.to_json()), flush=True)


if __name__ == "__main__":
    main()
