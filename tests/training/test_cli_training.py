"""`facescale models`, `evaluate` and `train --warm-start` through the CLI, on the small real version.

One flow, in order, on one storage root (the training fixtures' version copied in): the
uninterrupted run is registered, listed, shown and evaluated; then a version with one more
identity is trained from it with a warm start, and the warm-start report is checked against
both models' predictions computed here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import pytest
import tensorflow as tf

from facescale.storage import DatasetStore, Location, ModelRegistry
from facescale.training.artifacts import register_run
from facescale.training.data import decode_image
from facescale.training.plots import first_conv

from ..helpers import Result

if TYPE_CHECKING:
    from conftest import Curated, Run

RUN_WAIT_S = 1500


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, curated: Curated) -> Path:
    """A storage root holding the small version (copied), working directory tmp_path."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(Path(curated.location.root) / "datasets", data / "datasets")
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", str(data))
    return data


def _accuracy(model_dir: Path, rows: list[dict], labels: set[int]) -> float:
    model = keras.saving.load_model(model_dir / "model.keras", compile=False)
    chosen = [r for r in rows if r["label"] in labels]
    images = np.stack([decode_image(tf.constant(r["image"]), int(model.input_shape[1])).numpy() for r in chosen])
    predicted = model.predict(images, verbose=0).argmax(axis=1)
    return float((predicted == np.array([r["label"] for r in chosen])).mean())


def test_models_are_registered_listed_evaluated_and_grown_with_a_warm_start(
    whole_run: Run, root: Path, cli: Callable[..., Result], grown_factory: Callable[[Location], Curated], tmp_path: Path
) -> None:
    assert cli("models", "list").out.strip() == "no models registered yet"
    assert "no models registered yet" in cli("models", "latest").single_error_line()
    assert "unknown model 'nope'" in cli("evaluate", "nope").single_error_line()

    registry = ModelRegistry(Location.from_uri(str(root)))
    first = register_run(registry, whole_run.out)
    assert register_run(registry, whole_run.out) == first  # idempotent
    assert first.version_id == whole_run.result["version_id"] and first.num_classes == 6
    assert first.config["image_size"] == 75 and first.metrics["training"]["stopped_by"] == "threshold"
    assert sorted(f.path for f in first.files) == ["history.csv", "labels.json", "model.keras", "training.json"]

    listed = cli("models", "list")
    assert listed.code == 0 and first.model_id in listed.out and first.version_id in listed.out
    assert cli("models", "latest").out.strip() == first.model_id
    shown = json.loads(cli("models", "show", "latest", "--json").out)
    assert shown["model_id"] == first.model_id and shown["fingerprint"] == first.fingerprint

    evaluated = cli("evaluate", "latest")
    assert evaluated.code == 0, evaluated.err
    metrics = json.loads((tmp_path / "facescale-runs" / f"eval-{first.model_id}" / "eval" / "metrics.json").read_text())
    assert f"top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}" in evaluated.out
    for png in ("curves.png", "confusion.png", "filters.png", "feature_maps.png"):
        assert f"/files/eval/{png}" in evaluated.out
        assert (root / "models" / first.model_id / "files" / "eval" / png).is_file()
    record = registry.get(first.model_id)
    assert record.metrics["evaluation"]["top1"] == metrics["top1"] and record.metrics["evaluation"]["examples"] == 6
    assert "evaluation (test, 6 samples)" in cli("models", "show", first.model_id).out

    # a new identity arrives: train the next version from the registered model
    grown = grown_factory(Location.from_uri(str(root)))
    trained = cli(
        "train", "--version", grown.version_id, "--warm-start", "latest", "--max-epochs", "1", "--max-steps", "1",
        "--batch-size", "8", "--image-size", "75", "--backbone", "tiny",
    )
    assert trained.code == 0, trained.err
    second = registry.latest()
    assert second is not None and second.model_id != first.model_id
    assert (second.parent, second.version_id, second.num_classes) == (first.model_id, grown.version_id, 8)
    assert second.model_id in trained.out and "6 classes kept, 2 new" in trained.out  # head of 6 -> 8
    report = second.metrics["warm_start"]
    assert (report["copied_classes"], report["new_classes"], report["old_identities"]) == (6, 2, 3)
    test_rows = grown.split("test")
    old = {0, 2, 5}
    assert report["test_samples"] == sum(r["label"] in old for r in test_rows) == 6
    new_dir = tmp_path / "facescale-runs" / f"{grown.version_id}-from-{first.model_id}"
    previous = _accuracy(whole_run.out, test_rows, old)
    now = _accuracy(new_dir, test_rows, old)
    assert report["previous_accuracy"] == pytest.approx(previous) and report["new_accuracy"] == pytest.approx(now)
    assert report["at_least_as_good"] is (now >= previous)
    verdict = "at least as good" if now >= previous else "WORSE"
    assert verdict in trained.out

    # Registration calibrated it: thresholds, galleries and the chosen default are stored with the model,
    # so loading it for serving measures nothing.
    calibration = second.metrics["calibration"]
    assert calibration["default_backend"] in ("model", "dlib") and set(calibration["thresholds"]) == {"model", "dlib"}
    assert {"calibration/calibration.json", "calibration/gallery-dlib.npz"} <= {f.path for f in second.files}
    assert "serving backend" in trained.out and f"{calibration['default_backend']} (validation photos" in trained.out
    from facescale.config import ServingSettings
    from facescale.serving.loading import load_recognizer

    files_before = registry.get(second.model_id).files
    store = DatasetStore(Location.from_uri(str(root)))
    served = load_recognizer(registry, store, ServingSettings(cache_dir=str(tmp_path / "c")))
    assert served.model_id == second.model_id and served.default_backend == calibration["default_backend"]
    assert registry.get(second.model_id).files == files_before

    # the weights started from the first model's: one Adam step (lr 1e-3) moves each by about 1e-3,
    # while a fresh initialisation would be ~0.1 away
    old_model = keras.saving.load_model(whole_run.out / "model.keras", compile=False)
    new_model = keras.saving.load_model(new_dir / "model.keras", compile=False)
    old_kernel, old_bias = old_model.get_layer("logits").get_weights()
    new_kernel, new_bias = new_model.get_layer("logits").get_weights()
    assert new_kernel.shape == (128, 8)
    assert np.abs(new_kernel[:, :6] - old_kernel).max() < 0.005 and np.abs(new_bias[:6] - old_bias).max() < 0.005
    assert np.abs(new_kernel[:, 6:]).max() > 0.05  # the new identities' rows start fresh
    old_conv = np.asarray(first_conv(old_model).kernel)
    new_conv = np.asarray(first_conv(new_model).kernel)
    assert np.abs(new_conv - old_conv).max() < 0.005
    assert DatasetStore(Location.from_uri(str(root))).get(grown.version_id).split_counts()["test"] == 8


@pytest.mark.slow
@pytest.mark.timeout(RUN_WAIT_S)
def test_evaluate_with_the_leaky_baseline_reports_both_splits(
    whole_run: Run, root: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    registry = ModelRegistry(Location.from_uri(str(root)))
    record = register_run(registry, whole_run.out)
    result = cli("evaluate", record.model_id, "--leaky-baseline", "--batch-size", "4")
    assert result.code == 0, result.err
    work = tmp_path / "facescale-runs" / f"eval-{record.model_id}"
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    leaky = metrics["leaky"]
    assert leaky["version_id"] == f"{record.version_id}-leaky" and leaky["honest_top1"] == metrics["top1"]
    assert leaky["gap"] == pytest.approx(leaky["top1"] - metrics["top1"])
    # the same settings and step cap as the registered run
    trained = json.loads((work / "leaky" / "train" / "training.json").read_text())
    assert trained["settings"] == record.config and trained["max_steps_per_epoch"] == 2
    assert "honest vs leaky" in result.out and "by sample after augmentation (seed)" in result.out
    assert registry.get(record.model_id).metrics["evaluation"]["leaky"]["top1"] == leaky["top1"]
