"""Calibration: thresholds from validation pairs, enrolment, unseen people, and storing it with the model."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from facescale.errors import ConfigError
from facescale.serving.calibration import (
    Calibration,
    best_threshold,
    calibrate,
    load_calibration,
    sample_pairs,
    score_at,
    store_calibration,
    unseen_photos,
)
from facescale.storage import CropStore, DatasetStore, Location
from facescale.storage.schemas import CROP_SCHEMA, EMBEDDING_DIM

from .conftest import VERSION_ID


def test_best_threshold_separates_separable_scores() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    truth = np.array([False, False, False, True, True, True])
    t = best_threshold(scores, truth)
    assert 0.3 < t <= 0.7
    assert score_at(scores, truth, t) | {} == {
        "threshold": round(t, 6), "pairs": 6, "positives": 3, "accuracy": 1.0, "balanced_accuracy": 1.0,
        "precision": 1.0, "recall": 1.0, "roc_auc": 1.0,
    }


def test_best_threshold_balanced_ignores_class_sizes() -> None:
    """With 1 positive among many negatives, plain accuracy would refuse everything; balanced does not."""
    scores = np.array([0.9] + [0.1] * 50 + [0.95])
    truth = np.array([True] + [False] * 50 + [False])
    assert best_threshold(scores, truth, balanced=True) <= 0.9
    with pytest.raises(ConfigError):
        best_threshold(scores, np.zeros(len(scores), bool))


def test_sample_pairs_is_balanced_and_deterministic() -> None:
    labels = [0] * 5 + [1] * 5 + [2] * 2
    pairs, truth = sample_pairs(labels, 10, random.Random(3))
    again, _ = sample_pairs(labels, 10, random.Random(3))
    assert (pairs == again).all()
    assert truth.sum() == 5 and (~truth).sum() == 5
    for (i, j), same in zip(pairs, truth, strict=True):
        assert i < j and (labels[i] == labels[j]) == same
    _, truth = sample_pairs(labels, 10_000, random.Random(0))
    assert truth.sum() == 10 + 10 + 1  # every same-identity pair once


def test_unseen_photos_skips_known_people(lfw_dev: Path) -> None:
    people = unseen_photos(lfw_dev, {"colin powell"}, 1000, random.Random(0))
    assert "Colin Powell" not in people and "Tony Blair" in people
    assert all(len(p) >= 2 for p in people.values())
    assert len(unseen_photos(lfw_dev, set(), 7, random.Random(0))) == 7


def test_the_session_model_was_calibrated_and_stored(recognizer, served_base) -> None:
    """Calibrating (as registration does) stores the result with the model; loading reads it back."""
    assert recognizer.calibration.default_backend == "dlib"
    assert served_base.registry.get(recognizer.model_id).metrics["calibration"]["default_backend"] == "dlib"
    calibration = recognizer.calibration
    assert set(calibration.thresholds) == {"model", "dlib"}
    dlib = calibration.report["backends"]["dlib"]
    assert dlib["pairs"]["roc_auc"] >= 0.9  # the pretrained embedder separates these people
    assert dlib["pairs"]["pairs"] == 2 * dlib["pairs"]["positives"]  # 4 people x C(4, 2) = 24 same-person pairs
    assert dlib["pairs"]["positives"] == 24 and dlib["enrolled"] == 24
    record = served_base.registry.get(recognizer.model_id)
    assert record.metrics["calibration"]["thresholds"] == calibration.thresholds
    assert {"calibration/calibration.json", "calibration/gallery-model.npz", "calibration/gallery-dlib.npz"} <= {
        f.path for f in record.files
    }
    stored = load_calibration(served_base.registry.local_dir(recognizer.model_id, served_base.root / "cache"))
    assert stored is not None and stored.thresholds == calibration.thresholds
    for backend in ("model", "dlib"):
        assert np.allclose(stored.galleries[backend].embeddings, calibration.galleries[backend].embeddings)
        assert stored.enrolled(0, backend) == 6
        template = stored.template(0, backend)
        assert template is not None and abs(float(np.linalg.norm(template)) - 1) < 1e-5


def test_calibrate_with_unseen_people(recognizer, served_base, tmp_path: Path) -> None:
    """Pairs of people the model never saw go through detect, crop and embed, scored at the val threshold;
    their faces also serve as strangers for the unknown threshold."""
    unseen = tmp_path / "unseen"
    for person in ("Colin_Powell", "Hans_Blix", "Kofi_Annan", "Naomi_Watts", "Tom_Daschle"):
        (unseen / person).mkdir(parents=True)
        for photo in sorted((served_base.photos / person).glob("*.jpg"))[:4]:
            shutil.copy(photo, unseen / person / photo.name)
    (unseen / "Hans_Blix" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    lines: list[str] = []
    calibration = calibrate(
        recognizer, served_base.store, backends=["dlib"], unseen=unseen, progress=lines.append, max_pairs=200
    )
    report = calibration.report
    assert report["unseen"]["people"] == 4  # Colin Powell is known to the model
    assert report["unseen"]["refused"].get("not_an_image") == 1
    # Strangers for the unknown threshold: every validation photo with its own identity left out, and the unseen.
    assert report["identify"]["dlib"]["strangers"] == report["val_photos"] + report["unseen"]["faces"]
    assert report["unseen"]["faces"] >= 14
    pairs = report["backends"]["dlib"]["unseen_pairs"]
    assert pairs["threshold"] == calibration.thresholds["dlib"]["pair"]
    assert pairs["roc_auc"] >= 0.9 and pairs["accuracy"] >= 0.8
    assert any("unseen people: 4" in line for line in lines)
    assert set(calibration.thresholds) == {"dlib"}


def test_a_calibration_survives_its_round_trip(tmp_path: Path, recognizer) -> None:
    names = recognizer.calibration.save(tmp_path)
    assert sorted(names) == ["calibration.json", "gallery-dlib.npz", "gallery-model.npz"]
    again = Calibration.load(tmp_path)
    assert again.unknown_threshold == recognizer.calibration.unknown_threshold
    assert again.report == recognizer.calibration.report
    with pytest.raises(ConfigError):
        again.threshold("dlib", "nonsense")  # type: ignore[arg-type]


def test_store_calibration_keeps_other_files(recognizer, served_base, tmp_path: Path) -> None:
    registry = served_base.registry
    before = {f.path for f in registry.get(recognizer.model_id).files}
    store_calibration(registry, recognizer.calibration, tmp_path)
    after = registry.get(recognizer.model_id)
    assert {f.path for f in after.files} == before
    assert {"model.keras", "labels.json"} <= before


def test_dlib_calibration_reuses_the_crop_cache_embeddings(recognizer, served_base, tmp_path: Path) -> None:
    """The dlib embedding curation kept in the crop cache is used for a version's photo instead of embedding it
    again; photos the cache does not hold are embedded by the recognizer."""
    root = tmp_path / "store"
    shutil.copytree(served_base.root, root)
    location = Location.from_uri(str(root))
    store = DatasetStore(location)
    rows = [r for b in store.iter_batches(VERSION_ID, batch_size=512) for r in b.to_pylist()]
    train = [r for r in rows if r["split"] == "train"]
    marked = np.zeros(EMBEDDING_DIM, np.float32)
    marked[7] = 2.0  # unlike any real embedding; stored unnormalised, as curation stores dlib's vectors
    row = {key: None for key in CROP_SCHEMA.names} | {
        "image_id": train[0]["source_image_id"], "run_id": "ingest-test", "identity": train[0]["identity"],
        "identity_slug": train[0]["identity_slug"], "crop": train[0]["image"], "embedding": marked.tolist(),
    }
    with CropStore(location).open("chunk-a", "params-test", ["ingest-test/a"]) as writer:
        writer.write([row])
        writer.commit()
    lines: list[str] = []
    calibration = calibrate(recognizer, store, backends=["dlib"], progress=lines.append, max_pairs=200,
                            crops=CropStore(location))
    enrolled = calibration.galleries["dlib"].embeddings
    assert sum(bool(np.allclose(row, marked / 2)) for row in enrolled) == 1
    assert np.all(np.isfinite(enrolled)) and len(enrolled) == len(train)
    assert any("(1 embeddings reused from the crop cache)" in line for line in lines)
