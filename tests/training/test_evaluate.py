"""Evaluation: metrics from predictions, a trained model's metrics.json and plots, the seed's leaky split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from facescale.storage import DatasetStore, Location
from facescale.training.data import decode_image
from facescale.training.evaluate import evaluate, summarize
from facescale.training.leaky import leak_rate, make_leaky_version
from facescale.training.predict import Predictions

if TYPE_CHECKING:
    from conftest import Curated, Run

RUN_WAIT_S = 1200
LABELS = {0: {"name": "Ann", "slug": "ann"}, 2: {"name": "Bob", "slug": "bob"}, 5: {"name": "Cy", "slug": "cy"}}


def test_summarize_counts_accuracies_per_identity_and_confused_pairs() -> None:
    labels = np.array([0, 0, 0, 0, 2, 2, 5, 5], np.int32)
    top = np.array(
        [
            [0, 2, 5, 1, 3],  # right
            [2, 0, 5, 1, 3],  # 0 -> 2, truth second
            [2, 5, 1, 3, 4],  # 0 -> 2, truth not in the top 5
            [5, 0, 2, 1, 3],  # 0 -> 5
            [2, 0, 5, 1, 3],  # right
            [0, 2, 5, 1, 3],  # 2 -> 0
            [5, 0, 2, 1, 3],  # right
            [5, 0, 2, 1, 3],  # right
        ],
        np.int32,
    )
    result = summarize(Predictions(labels, top), LABELS, version_id="v", split="test", num_classes=6, top_confused=2)
    assert (result.examples, result.top1, result.top5) == (8, 4 / 8, 7 / 8)
    assert [(r["slug"], r["correct"], r["examples"], r["accuracy"]) for r in result.per_identity] == [
        ("ann", 1, 4, 0.25),  # worst first
        ("bob", 1, 2, 0.5),
        ("cy", 2, 2, 1.0),
    ]
    first, second = result.confused_pairs
    assert (first["true"]["slug"], first["predicted"]["slug"], first["count"], first["share"]) == ("ann", "bob", 2, 0.5)
    assert (second["true"]["label"], second["predicted"]["label"], second["count"]) == (0, 5, 1)


def _model_predictions(model_dir: Path, curated: Curated) -> tuple[np.ndarray, np.ndarray]:
    """The test split's labels and the model's argmax, computed apart from evaluate()."""
    model = keras.saving.load_model(model_dir / "model.keras", compile=False)
    rows = curated.split("test")
    size = int(model.input_shape[1])
    images = np.stack([decode_image(tf.constant(r["image"]), size).numpy() for r in rows])
    predicted = model.predict(images, verbose=0).argmax(axis=1)
    return np.array([r["label"] for r in rows]), predicted


@pytest.mark.timeout(RUN_WAIT_S)
def test_evaluate_writes_metrics_and_the_plots_of_a_trained_model(
    inception_run: Run, curated: Curated, tmp_path: Path
) -> None:
    assert inception_run.result["epochs"] == 2
    leaky = {"version_id": "x-leaky", "top1": 0.9, "top5": 1.0, "examples": 9, "leak_rate": 0.8}
    result = evaluate(curated.store, inception_run.out, tmp_path, batch_size=4, leaky=leaky)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result.to_json()))

    truth, predicted = _model_predictions(inception_run.out, curated)
    assert result.examples == len(truth) == 6 and result.num_classes == 6
    assert result.top1 == pytest.approx(float((predicted == truth).mean()))
    per_slug = {r["slug"]: r["correct"] for r in result.per_identity}
    slugs = {0: "colin-powell", 2: "tony-blair", 5: "donald-rumsfeld"}
    assert per_slug == {slugs[t]: int(((truth == t) & (predicted == t)).sum()) for t in slugs}
    wrong = Counter((int(t), int(p)) for t, p in zip(truth, predicted, strict=True) if t != p)
    assert {(c["true"]["label"], c["predicted"]["label"]): c["count"] for c in result.confused_pairs} == dict(wrong)
    assert 0 <= result.top1 <= result.top5 <= 1
    # the leaky figure is reported beside the honest one
    assert result.leaky is not None
    assert result.leaky["honest_top1"] == result.top1 and result.leaky["gap"] == pytest.approx(0.9 - result.top1)

    assert result.plots == {name: f"{name}.png" for name in ("curves", "confusion", "filters", "feature_maps")}
    for name in result.plots.values():
        with Image.open(tmp_path / name) as png:
            assert png.format == "PNG" and png.size[0] > 200 and png.size[1] > 200
            low, high = png.convert("L").getextrema()
            assert high - low > 100  # something is drawn


def test_feature_maps_and_filters_come_from_the_first_layers(inception_run: Run, curated: Curated) -> None:
    from facescale.training.plots import feature_maps, first_conv, sample_image

    model = keras.saving.load_model(inception_run.out / "model.keras", compile=False)
    conv = first_conv(model)
    assert tuple(conv.kernel.shape) == (3, 3, 3, 32)  # Inception V3's stem
    image = sample_image(curated.store, curated.version_id, "test", 75)
    expected = decode_image(tf.constant(curated.split("test")[0]["image"]), 75).numpy()
    np.testing.assert_array_equal(image, expected)
    maps = feature_maps(model, image)
    assert [shape.shape for _, shape in maps] == [(37, 37, 32), (35, 35, 32), (35, 35, 64)]
    assert all(values.min() >= 0 for _, values in maps)  # after ReLU


def test_the_leaky_version_resplits_samples_so_copies_of_a_photo_cross_splits(
    augmented: Curated, tmp_path: Path
) -> None:
    target = DatasetStore(Location.from_uri(str(tmp_path)))
    leaky_id = make_leaky_version(augmented.store, augmented.version_id, target, seed=0)
    assert make_leaky_version(augmented.store, augmented.version_id, target, seed=0) == leaky_id  # reused
    rows = [r for b in target.iter_batches(leaky_id) for r in b.to_pylist()]
    original = {r["sample_id"]: r for r in augmented.rows}
    assert sorted(r["sample_id"] for r in rows) == sorted(original)  # every sample once
    for row in rows:  # only the split changed
        assert {k: v for k, v in row.items() if k != "split"} == {
            k: v for k, v in original[row["sample_id"]].items() if k != "split"
        }
    per_identity = Counter((r["label"], r["split"]) for r in rows)
    for label in (0, 2, 5):  # 28 samples each (24 train + 2 val + 2 test): 70/20/10 exactly
        assert (per_identity[label, "train"], per_identity[label, "val"], per_identity[label, "test"]) == (20, 5, 3)
    manifest = target.get(leaky_id)
    assert manifest.split_counts() == {"train": 60, "val": 15, "test": 9}
    assert leak_rate(augmented.store, augmented.version_id) == 0.0  # split by source: no leak
    assert leak_rate(target, leaky_id) > 0.5  # most test photos also sit in train
    elsewhere = DatasetStore(Location.from_uri(str(tmp_path / "b")))
    other = make_leaky_version(augmented.store, augmented.version_id, elsewhere, seed=1)
    again = {r["sample_id"]: r["split"] for b in elsewhere.iter_batches(other) for r in b.to_pylist()}
    assert again != {r["sample_id"]: r["split"] for r in rows}  # the seed matters


@pytest.mark.timeout(RUN_WAIT_S)
def test_the_leaky_baseline_trains_the_same_config_on_the_leaky_split(leaky_run: Run, augmented: Curated) -> None:
    report = leaky_run.result
    assert report["version_id"] == f"{augmented.version_id}-leaky"
    assert report["examples"] == 9 and report["leak_rate"] > 0.5
    assert report["training"]["epochs"] == 2 and report["training"]["stopped_by"] == "threshold"
    metrics = json.loads((leaky_run.out / "eval" / "metrics.json").read_text())
    assert (metrics["top1"], metrics["top5"], metrics["examples"]) == (report["top1"], report["top5"], 9)
    trained = json.loads((leaky_run.out / "train" / "training.json").read_text())
    assert trained["version_id"] == report["version_id"] and trained["settings"]["stop_threshold"] == 0.01
    assert trained["max_steps_per_epoch"] == 2
