"""Distillation from the dlib embedding: the targets read from the crop cache, fed per sample, and learnt.

The version is the small one of the conftest (real lfw-dev crops); its crop cache is written
here the way curation writes it, with each crop's real dlib embedding (`FaceEmbedder`).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from facescale.config import TrainingSettings
from facescale.errors import ConfigError
from facescale.pipeline.dedup import hash_image_keys
from facescale.pipeline.embeddings import FaceEmbedder
from facescale.storage import CropStore, DatasetStore, Location
from facescale.storage.schemas import EMBEDDING_DIM, HASH_BYTES
from facescale.training.data import CuratedInput, ExtraInput, with_extra
from facescale.training.model import embedding_model
from facescale.training.teacher import extra_crops, source_ids, sources_by_split, teacher_embeddings
from facescale.training.train import train

from .conftest import Curated, crop_row, face_crop, make_version, write_crops

NO_EMBEDDING = 0  # index (in source order) of the photo whose crop row has no embedding


@pytest.fixture(scope="module")
def taught(lfw_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Curated, dict[str, np.ndarray]]:
    """The small version with a crop cache: every source photo's dlib embedding, but one's."""
    root = tmp_path_factory.mktemp("taught")
    curated = make_version(Location.from_uri(str(root)), lfw_dev)
    embedder = FaceEmbedder()
    originals = [r for r in curated.rows if r["aug_index"] == 0]
    expected: dict[str, np.ndarray] = {}
    rows = []
    for i, row in enumerate(originals):
        vector = None if i == NO_EMBEDDING else embedder.embed_bytes(row["image"])
        if vector is not None:
            expected[row["source_image_id"]] = vector / np.linalg.norm(vector)
        rows.append(crop_row(row, vector))
    write_crops(curated.location, "a", rows)
    return curated, expected


def test_teacher_embeddings_are_the_crop_caches_unit_vectors_of_the_wanted_photos(
    taught: tuple[Curated, dict[str, np.ndarray]],
) -> None:
    curated, expected = taught
    wanted = source_ids(curated.store, curated.version_id, ("train", "val"))
    assert wanted == {r["source_image_id"] for r in curated.rows if r["split"] in ("train", "val")}
    found = teacher_embeddings(CropStore(curated.location), wanted, centre=False)
    assert set(found) == wanted & set(expected)  # test photos not asked for; the one without none
    assert len(found) == len(wanted) - 1
    for source, vector in found.items():
        assert vector.shape == (EMBEDDING_DIM,) and vector.dtype == np.float32
        np.testing.assert_allclose(vector, expected[source], atol=1e-6)
    raw = np.stack([found[k] for k in sorted(found)])
    assert np.mean(raw @ raw.T) > 0.5  # dlib's embeddings share a direction ...
    centred = teacher_embeddings(CropStore(curated.location), wanted)  # ... which the default takes out
    mean = raw.mean(axis=0)
    for source, vector in centred.items():
        want = found[source] - mean
        np.testing.assert_allclose(vector, want / np.linalg.norm(want), atol=1e-5)
    both = np.stack([centred[k] for k in sorted(centred)])
    assert abs(float(np.mean(both @ both.T))) < 0.05


def test_the_newest_chunk_wins_and_a_store_without_embeddings_is_refused(
    taught: tuple[Curated, dict[str, np.ndarray]], lfw_dev: Path, tmp_path: Path
) -> None:
    source_store, expected = taught
    copy = tmp_path / "store"
    shutil.copytree(Path(source_store.location.path("")), copy)
    store = DatasetStore(Location.from_uri(str(copy)))
    source = sorted(expected)[0]
    row = next(r for r in source_store.rows if r["source_image_id"] == source)
    newer = -expected[source]  # another embedding of the same photo, made later
    write_crops(store.root, "b", [crop_row(row, newer)])
    found = teacher_embeddings(CropStore(store.root), {source}, centre=False)
    np.testing.assert_allclose(found[source], newer, atol=1e-6)

    bare = make_version(Location.from_uri(str(tmp_path / "bare")), lfw_dev)  # no crop cache
    with pytest.raises(ConfigError, match="no embedding of this version's photos"):
        teacher_embeddings(CropStore(bare.location), source_ids(bare.store, bare.version_id))
    with pytest.raises(ConfigError, match="no embedding of this version's photos"):
        train(bare.store, bare.version_id, TrainingSettings(backbone="tiny", image_size=32, teacher="dlib"),
              tmp_path / "run", crops=CropStore(bare.location))
    with pytest.raises(ConfigError, match="no crop cache was given"):
        train(bare.store, bare.version_id, TrainingSettings(backbone="tiny", image_size=32, teacher="dlib"),
              tmp_path / "run")


def test_the_input_carries_each_samples_teacher_and_zeros_where_there_is_none(
    taught: tuple[Curated, dict[str, np.ndarray]],
) -> None:
    curated, expected = taught
    by_image = {r["image"]: r for r in curated.rows}
    data = CuratedInput(curated.store, curated.version_id, "train", 75, teacher=expected)
    seen = 0
    zeros = 0
    for image, label, target in data.encoded(shuffle=True, seed=3, epoch=1).as_numpy_iterator():
        row = by_image[image]
        source = row["source_image_id"]
        assert label == row["label"]
        want = expected.get(source, np.zeros(EMBEDDING_DIM, np.float32))
        np.testing.assert_allclose(target, want, atol=1e-6)
        zeros += int(not np.any(target))
        seen += 1
    assert seen == len(curated.split("train")) and zeros == 1
    inputs, labels = next(iter(data.dataset(4)))
    assert set(inputs) == {"image", "teacher_embedding"}
    assert inputs["image"].shape == (4, 75, 75, 3) and inputs["teacher_embedding"].shape == (4, EMBEDDING_DIM)
    assert labels.shape == (4,)


def _agreement(model_path: Path, curated: Curated, expected: dict[str, np.ndarray]) -> float:
    """Mean cosine between the model's embedding of each train photo and its (centred) dlib embedding."""
    import keras

    from facescale.training.data import decode_image

    embed = embedding_model(keras.models.load_model(model_path))
    rows = [r for r in curated.split("train") if r["source_image_id"] in expected]
    images = np.stack([decode_image(r["image"], 75).numpy() for r in rows])
    student = embed.predict(images, verbose=0)
    teacher = np.stack([expected[r["source_image_id"]] for r in rows])
    return float(np.mean(np.sum(student * teacher, axis=1)))


def test_distillation_makes_the_embedding_reproduce_the_teachers(
    taught: tuple[Curated, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    """The same short run with and without the teacher: only the taught one's embedding follows dlib's."""
    curated, _ = taught
    wanted = source_ids(curated.store, curated.version_id, ("train",))
    expected = teacher_embeddings(CropStore(curated.location), wanted)
    # batchnorm_momentum 0.5: the agreement is measured in inference mode after only 60 steps
    base = {"backbone": "tiny", "image_size": 75, "batch_size": 8, "max_epochs": 20, "batchnorm_momentum": 0.5,
            "stop_metric": "loss", "stop_threshold": 1e-9, "learning_rate": 3e-3, "deterministic": False}
    plain = train(curated.store, curated.version_id, TrainingSettings(**base, teacher="none"), tmp_path / "plain")
    taught_run = train(
        curated.store, curated.version_id, TrainingSettings(**base, teacher="dlib", teacher_weight=5.0),
        tmp_path / "taught", crops=CropStore(curated.location),
    )
    assert taught_run.settings["teacher"] == "dlib"
    plain_agreement = _agreement(plain.model_path, curated, expected)
    taught_agreement = _agreement(taught_run.model_path, curated, expected)
    assert taught_agreement > 0.4, (plain_agreement, taught_agreement)
    assert taught_agreement > plain_agreement + 0.3, (plain_agreement, taught_agreement)


def test_a_teacher_needs_the_dlib_width() -> None:
    with pytest.raises(ValueError, match="embedding_dim 128"):
        TrainingSettings(teacher="dlib", embedding_dim=64)


def test_the_leaky_baseline_reads_the_teacher_from_the_versions_own_store(
    taught: tuple[Curated, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    """Its re-split lives in a scratch store without a crop cache: the targets come from the original."""
    from facescale.training.leaky import leaky_baseline

    curated, _ = taught
    settings = TrainingSettings(backbone="tiny", image_size=32, batch_size=4, max_epochs=1, teacher="dlib",
                                stop_metric="val_loss", stop_threshold=1e-9, deterministic=False)
    scratch = DatasetStore(Location.from_uri(str(tmp_path / "leaky" / "data")))  # no crop cache of its own
    report = leaky_baseline(curated.store, curated.version_id, settings, tmp_path / "leaky", scratch=scratch,
                            max_steps_per_epoch=2, crops=CropStore(curated.location))
    assert report["training"]["epochs"] == 1
    assert json.loads((tmp_path / "leaky" / "train" / "training.json").read_text())["settings"]["teacher"] == "dlib"


def test_a_distilled_run_warm_starts_from_a_previous_model(
    taught: tuple[Curated, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    """The wrapper shares the classifier's layers: the copied backbone and head are what it trains."""
    curated, _ = taught
    short = {"backbone": "tiny", "image_size": 32, "batch_size": 4, "max_epochs": 1, "stop_metric": "val_loss",
             "stop_threshold": 1e-9, "deterministic": False}
    previous = train(curated.store, curated.version_id, TrainingSettings(**short), tmp_path / "previous",
                     max_steps_per_epoch=2)
    grown = train(curated.store, curated.version_id, TrainingSettings(**short, teacher="dlib"), tmp_path / "grown",
                  max_steps_per_epoch=2, warm_start=previous.out_dir, crops=CropStore(curated.location))
    assert grown.warm_start is not None
    assert grown.warm_start["copied_classes"] == previous.num_classes and grown.warm_start["new_classes"] == 0
    assert grown.warm_start["previous_accuracy"] is not None and grown.warm_start["new_accuracy"] is not None


# -- training.teacher_extra: unlabelled crops from the cache --------------------------------
EXTRA_PEOPLE = (("Colin_Powell", 12), ("George_W_Bush", 0))  # (folder, first photo): beyond the version's 12


@pytest.fixture(scope="module")
def with_extras(
    taught: tuple[Curated, dict[str, np.ndarray]], lfw_dev: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Curated, set[str], str]:
    """The taught version plus a chunk of crops it does not use: 6 photos of a version identity beyond its
    12 and 6 of someone else (the extras), a copy of one of its test photos (a re-encoded crop a few pixels
    off) and a crop that failed a gate; returns the version, the extras' ids and the copy's id."""
    source, expected = taught
    root = tmp_path_factory.mktemp("extras")
    shutil.copytree(Path(source.location.path("")), root, dirs_exist_ok=True)
    curated = Curated(Location.from_uri(str(root)), source.version_id, source.rows)
    embedder = FaceEmbedder()
    rows: list[dict[str, Any]] = []
    extras = set()
    for folder, first in EXTRA_PEOPLE:
        for path in sorted((lfw_dev / folder).glob("*.jpg"))[first:first + 6]:
            image = face_crop(path)
            sample = {"source_image_id": hashlib.sha256(image).hexdigest(), "identity": folder.replace("_", " "),
                      "identity_slug": folder.lower().replace("_", "-"), "image": image, "face_box": None}
            rows.append(crop_row(sample, embedder.embed_bytes(image)))
            extras.add(sample["source_image_id"])
    test = curated.split("test")[0]
    with Image.open(io.BytesIO(test["image"])) as photo:
        shifted = photo.crop((3, 3, photo.width - 2, photo.height - 2)).resize(photo.size)
    buf = io.BytesIO()
    shifted.save(buf, format="JPEG", quality=70)
    copy = {**test, "source_image_id": "copy-of-a-test-photo", "image": buf.getvalue()}
    rows.append(crop_row(copy, embedder.embed_bytes(copy["image"])))
    gated = {**rows[0], "image_id": "blurry", "error": "blurry"}
    rows.append(gated)
    own = [crop_row(r, expected.get(r["source_image_id"])) for r in curated.rows if r["aug_index"] == 0]
    # a newer chunk (its rows win), every row with the perceptual keys curation stores with a crop
    write_crops(curated.location, "extra", [_with_keys(row) for row in [*rows, *own]])
    return curated, extras, copy["source_image_id"]


def _with_keys(row: dict[str, Any]) -> dict[str, Any]:
    keys = hash_image_keys(row["crop"])
    assert keys is not None
    return {**row, "phash": keys.key.to_bytes(HASH_BYTES, "big"),
            "phash_windows": b"".join(k.to_bytes(HASH_BYTES, "big") for k in keys.windows)}


def test_extra_crops_are_the_caches_other_usable_photos_but_none_near_a_held_out_one(
    with_extras: tuple[Curated, set[str], str],
) -> None:
    curated, extras, copy = with_extras
    crops = CropStore(curated.location)
    sources = sources_by_split(curated.store, curated.version_id)
    found = extra_crops(crops, sources)
    assert set(found.image_ids) == extras  # not the version's photos, not the blurry one, not the copy
    assert len(found.images) == len(found) and found.embeddings.shape == (len(found), EMBEDDING_DIM)
    unguarded = extra_crops(crops, sources, max_distance=0)
    assert set(unguarded.image_ids) == extras | {copy}  # the near-duplicate rule alone kept the copy out

    targets = teacher_embeddings(crops, source_ids(curated.store, curated.version_id, ("train", "val")), extra=found)
    assert extras <= set(targets)  # centred on one mean with the version's photos
    together = np.stack(list(targets.values()))
    assert abs(float(np.mean(together @ together.T))) < 0.05


def test_the_extra_stream_is_a_function_of_seed_and_epoch_and_mixes_in_with_zero_weight(
    with_extras: tuple[Curated, set[str], str],
) -> None:
    curated, _, _ = with_extras
    crops = CropStore(curated.location)
    found = extra_crops(crops, sources_by_split(curated.store, curated.version_id))
    extra = ExtraInput(found.images, found.embeddings, 75)
    assert sorted(extra.order(0, 1, len(extra))) == list(range(len(extra)))  # a permutation per round
    assert list(extra.order(0, 1, 30)) == list(extra.order(0, 1, 30))
    assert list(extra.order(0, 1, 30)) != list(extra.order(0, 2, 30))
    whole = [t for _, t in extra.epochs(3, 4, start_epoch=0, end_epoch=3, seed=5).as_numpy_iterator()]
    resumed = [t for _, t in extra.epochs(3, 4, start_epoch=2, end_epoch=3, seed=5).as_numpy_iterator()]
    assert len(whole) == 12 and len(resumed) == 4
    for a, b in zip(whole[8:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)  # a resumed run is fed what an uninterrupted one was

    expected = teacher_embeddings(crops, source_ids(curated.store, curated.version_id, ("train", "val")))
    labelled = CuratedInput(curated.store, curated.version_id, "train", 75, teacher=expected)
    stream = with_extra(labelled.epochs(4, 2, end_epoch=1), extra.epochs(2, 2, end_epoch=1))
    inputs, labels, weights = next(iter(stream))
    assert inputs["image"].shape == (6, 75, 75, 3) and inputs["teacher_embedding"].shape == (6, EMBEDDING_DIM)
    np.testing.assert_allclose(weights.numpy(), [1.5] * 4 + [0.0] * 2)
    assert list(labels.numpy()[4:]) == [0, 0]


def test_teacher_extra_teaches_the_embedding_on_photos_without_labels(
    with_extras: tuple[Curated, set[str], str], tmp_path: Path
) -> None:
    """The same short run with and without the extra crops: only the one fed them reproduces dlib on them."""
    curated, _, _ = with_extras
    crops = CropStore(curated.location)
    found = extra_crops(crops, sources_by_split(curated.store, curated.version_id))
    targets = teacher_embeddings(crops, source_ids(curated.store, curated.version_id, ("train", "val")), extra=found)
    base = {"backbone": "tiny", "image_size": 75, "batch_size": 8, "max_epochs": 20, "batchnorm_momentum": 0.5,
            "stop_metric": "loss", "stop_threshold": 1e-9, "learning_rate": 3e-3, "deterministic": False,
            "teacher": "dlib", "teacher_weight": 5.0}
    runs = {}
    for extra in (0, 8):
        runs[extra] = train(curated.store, curated.version_id, TrainingSettings(**base, teacher_extra=extra),
                            tmp_path / f"extra-{extra}", crops=crops)
    assert runs[8].settings["teacher_extra"] == 8
    history = (runs[8].model_path.parent / "history.csv").read_text().splitlines()
    assert "accuracy" in history[0] and len(history) == 21

    import keras

    from facescale.training.data import decode_image

    def agreement(model_path: Path) -> float:
        embed = embedding_model(keras.models.load_model(model_path))
        images = np.stack([decode_image(image, 75).numpy() for image in found.images])
        student = embed.predict(images, verbose=0)
        teacher = np.stack([targets[i] for i in found.image_ids])
        return float(np.mean(np.sum(student * teacher, axis=1)))

    without, fed = agreement(runs[0].model_path), agreement(runs[8].model_path)
    assert fed > without + 0.1, (without, fed)



def test_teacher_extra_refuses_a_cache_with_nothing_beyond_the_versions_photos(
    taught: tuple[Curated, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    curated, _ = taught  # its cache holds the version's own photos only
    settings = TrainingSettings(backbone="tiny", image_size=32, teacher="dlib", teacher_extra=4)
    with pytest.raises(ConfigError, match="no usable crop beyond this version's own photos"):
        train(curated.store, curated.version_id, settings, tmp_path / "run", crops=CropStore(curated.location))
    assert not (tmp_path / "run" / "model.keras").exists()


def test_teacher_extra_needs_the_teacher() -> None:
    with pytest.raises(ValueError, match="teacher_extra needs teacher: dlib"):
        TrainingSettings(teacher_extra=8)
