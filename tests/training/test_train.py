"""train() end to end on CPU: artifacts, threshold stop, two mirrored replicas, kill and resume.

The runs are child processes started by conftest's `training_runs` (see there why); the
resume and two-replica tests add three more runs, about four minutes of CPU on this
machine, so they are marked slow.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from facescale.config import TrainingSettings
from facescale.errors import ConfigError, ConflictError
from facescale.training.model import embedding_model
from facescale.training.rundir import BACKUP_DIR, TrainResult
from facescale.training.train import train

if TYPE_CHECKING:
    from conftest import Curated, Resumed, Run


RUN_WAIT_S = 1200  # a run is about a minute of CPU; the shared machine can make that ten
STOPPING = {
    "backbone": "tiny",
    "image_size": 75,
    "batch_size": 8,
    "max_epochs": 4,
    "min_epochs": 2,
    "stop_metric": "val_top5_accuracy",
    "stop_threshold": 0.01,
}  # conftest.STOPPING: the whole run's settings


def _weights(model_file: Path, tmp: Path) -> dict[str, np.ndarray]:
    """Every variable stored in a .keras archive, read with h5py (no model is built)."""
    with zipfile.ZipFile(model_file) as archive:
        archive.extract("model.weights.h5", tmp)
    found: dict[str, np.ndarray] = {}

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset):
            found[name] = item[()]

    with h5py.File(tmp / "model.weights.h5", "r") as h5:
        h5.visititems(visit)
    return found


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                key = f"{path.parent.name}/{value.tag}"
                found.setdefault(key, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return found


@pytest.mark.timeout(RUN_WAIT_S)
def test_train_writes_the_model_labels_history_and_logs(whole_run: Run, curated: Curated) -> None:
    result = whole_run.result
    assert (result["replicas"], result["global_batch_size"], result["steps_per_epoch"]) == (1, 8, 2)
    # the threshold is met from epoch 1 on, but min_epochs = 2 holds it back one epoch
    assert (result["epochs"], result["stopped_by"], result["resumed_from"]) == (2, "threshold", 0)
    assert result["monitor"] == "val_top5_accuracy"
    assert result["best_value"] == max(result["history"]["val_top5_accuracy"])
    assert result["best_epoch"] == result["history"]["val_top5_accuracy"].index(result["best_value"]) + 1
    out = whole_run.out
    assert TrainResult.load(out).to_json() == result

    labels = json.loads((out / "labels.json").read_text())
    assert labels == {
        "version_id": curated.version_id,
        "num_classes": 6,
        "labels": {
            "0": {"name": "Colin Powell", "slug": "colin-powell"},
            "2": {"name": "Tony Blair", "slug": "tony-blair"},
            "5": {"name": "Donald Rumsfeld", "slug": "donald-rumsfeld"},
        },
    }
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert {"loss", "accuracy", "top5_accuracy", "val_loss", "val_accuracy", "val_top5_accuracy"} <= set(rows[0])
    assert float(rows[1]["val_loss"]) == pytest.approx(result["history"]["val_loss"][1])
    scalars = _scalars(out / "tensorboard")
    assert [step for step, _ in scalars["validation/epoch_loss"]] == [0, 1]
    assert scalars["train/epoch_accuracy"][1][1] == pytest.approx(result["history"]["accuracy"][1])
    assert (out / "best.weights.h5").is_file()
    assert sorted(p.name for p in (out / BACKUP_DIR).iterdir()) == ["state.json"]  # weights dropped when done

    model = keras.saving.load_model(out / "model.keras")
    assert model.output_shape == (None, 6) and getattr(model, "optimizer", None) is None
    images = np.zeros((2, 75, 75, 3), "float32")
    np.testing.assert_allclose(model.predict(images, verbose=0).sum(axis=1), 1.0, rtol=1e-5)
    vectors = embedding_model(model).predict(images, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.timeout(RUN_WAIT_S)
def test_the_same_version_and_settings_give_the_same_model(whole_run: Run, again_run: Run, tmp_path: Path) -> None:
    """Two processes training at once (sharing the cores) end on bit-identical weights and history."""
    assert again_run.result["history"] == whole_run.result["history"]
    mine = _weights(again_run.out / "model.keras", tmp_path / "again")
    theirs = _weights(whole_run.out / "model.keras", tmp_path / "whole")
    assert mine.keys() == theirs.keys() and len(mine) == 23  # every variable of the tiny model
    for name, value in theirs.items():
        np.testing.assert_array_equal(mine[name], value, err_msg=name)


@pytest.mark.slow
@pytest.mark.timeout(2 * RUN_WAIT_S)
def test_a_killed_run_resumes_to_the_uninterrupted_result(
    whole_run: Run, resumed_runs: Resumed, tmp_path: Path
) -> None:
    killed = resumed_runs.killed
    assert killed.returncode == -9, killed.stderr[-4000:]  # SIGKILL, in epoch 2
    assert (resumed_runs.killed_state["epoch"], resumed_runs.killed_state["finished"]) == (1, False)
    resumed, whole = resumed_runs.resumed.result, whole_run.result
    assert (resumed["resumed_from"], resumed["epochs"], resumed["stopped_by"]) == (1, 2, "threshold")
    for key, values in whole["history"].items():
        np.testing.assert_allclose(resumed["history"][key], values, rtol=1e-4, atol=1e-5, err_msg=key)
    assert resumed["best_epoch"] == whole["best_epoch"]
    with open(resumed_runs.resumed.out / "history.csv", newline="") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["0", "1"]  # no epoch logged twice
    mine = _weights(resumed_runs.resumed.out / "model.keras", tmp_path / "resumed")
    theirs = _weights(whole_run.out / "model.keras", tmp_path / "whole")
    assert mine.keys() == theirs.keys() and len(mine) == 23  # every variable of the tiny model
    for name, value in theirs.items():
        np.testing.assert_allclose(mine[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.slow
@pytest.mark.timeout(RUN_WAIT_S)
def test_two_mirrored_cpu_replicas_train_to_max_epochs(mirrored_run: Run) -> None:
    result = mirrored_run.result
    assert (result["replicas"], result["global_batch_size"], result["steps_per_epoch"]) == (2, 8, 1)
    assert "MirroredStrategy: 2 replica(s)" in mirrored_run.stderr
    assert (result["epochs"], result["stopped_by"]) == (2, "max_epochs")  # val_loss never <= 1e-6
    assert all(np.isfinite(v) for values in result["history"].values() for v in values)
    assert (mirrored_run.out / "model.keras").is_file()


def test_a_finished_run_is_returned_and_a_different_one_refused(whole_run: Run, curated: Curated) -> None:
    settings = TrainingSettings(**STOPPING)
    again = train(curated.store, curated.version_id, settings, whole_run.out, max_steps_per_epoch=2)
    assert again.to_json() == whole_run.result  # nothing retrained
    moved = TrainingSettings(**(STOPPING | {"stop_threshold": 0.5, "max_epochs": 9}))  # a new stop: still finished
    kept = train(curated.store, curated.version_id, moved, whole_run.out, max_steps_per_epoch=2)
    assert kept.to_json() == again.to_json()
    other = TrainingSettings(**(STOPPING | {"learning_rate": 0.01}))
    with pytest.raises(ConflictError, match="differs in: settings"):
        train(curated.store, curated.version_id, other, whole_run.out, max_steps_per_epoch=2)


def test_settings_that_cannot_work_are_refused_before_training(curated: Curated, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fewer than one global batch"):
        train(curated.store, curated.version_id, TrainingSettings(image_size=75, batch_size=64), tmp_path)
    with pytest.raises(ConfigError, match="stop_metric 'val_f1'"):
        train(curated.store, curated.version_id, TrainingSettings(stop_metric="val_f1"), tmp_path)
