"""Serving fixtures: a small CURATED version cropped by the real pipeline, and a registered model on it.

The version holds original photos of four lfw-dev people, cropped with `crop_face` (the
dataset's own detector and crop), 6 train / 4 val / 2 test each. The model is the real
Inception V3 of `build_model` at its smallest input, saved and registered as training
would, but not trained (training it takes minutes here): these tests check serving, the
quality of our embedding is measured by `facescale calibrate` on real training runs. Where a
test needs a model that tells people apart, it uses the pretrained ``dlib`` backend.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from facescale.app.services import Services
from facescale.config import ServingSettings, Settings, StorageSettings
from facescale.pipeline.faces import CropParams, crop_face
from facescale.storage import DatasetStore, IdentityEntry, Location, ModelRegistry, ShardSizing

VERSION_ID = "20261130T000000Z-serve1"
PEOPLE = ("Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Jacques_Chirac")
PLAN = ("train",) * 6 + ("val",) * 4 + ("test",) * 2
IMAGE_SIZE = 75
PARAMS = CropParams()


@dataclass(frozen=True)
class Served:
    """A store with the version and one registered model."""

    root: Path
    model_id: str
    photos: Path  # lfw-dev

    @property
    def location(self) -> Location:
        return Location.from_uri(str(self.root))

    @property
    def store(self) -> DatasetStore:
        return DatasetStore(self.location)

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.location)

    def photo(self, person: str, index: int = 0) -> Path:
        return sorted((self.photos / person).glob("*.jpg"))[index]

    def two_people(self, path: Path) -> Path:
        """Tony Blair and Colin Powell side by side (one face each) as a JPEG at ``path``."""
        from PIL import Image

        with Image.open(self.photo("Tony_Blair", 42)) as a, Image.open(self.photo("Colin_Powell", 40)) as b:
            pair = Image.new("RGB", (500, 250))
            pair.paste(a, (0, 0))
            pair.paste(b, (250, 0))
        pair.save(path, quality=92)
        return path


def make_version(location: Location, photos: Path) -> list[str]:
    """Write the version; return the names by label."""
    rows, entries = [], []
    for label, folder in enumerate(PEOPLE):
        name, slug = folder.replace("_", " "), folder.lower().replace("_", "-")
        counts = {"train": 0, "val": 0, "test": 0}
        kept = 0
        for path in sorted((photos / folder).glob("*.jpg")):
            if kept == len(PLAN):
                break
            data = path.read_bytes()
            result = crop_face(data, PARAMS)
            if not result.ok:
                continue
            split = PLAN[kept]
            kept += 1
            counts[split] += 1
            source = hashlib.sha256(data).hexdigest()
            x, y, w, h = result.face_box
            rows.append({
                "sample_id": f"{source}-000", "source_image_id": source, "identity": name, "identity_slug": slug,
                "label": label, "split": split, "aug_index": 0, "face_box": {"x": x, "y": y, "w": w, "h": h},
                "image": result.image, "width": result.width, "height": result.height,
                "sharpness": result.sharpness, "brightness": result.brightness, "contrast": result.contrast,
            })
        assert kept == len(PLAN), f"{folder}: only {kept} usable photos"
        entries.append(IdentityEntry(name=name, slug=slug, label=label, counts=counts, sources=kept))
    store = DatasetStore(location, ShardSizing(rows_per_row_group=16, max_rows_per_shard=32))
    with store.create(VERSION_ID, parent=None, config={"seed": 0, "crop": PARAMS.to_dict()}) as writer:
        writer.write(rows)
        writer.commit(entries)
    return [p.replace("_", " ") for p in PEOPLE]


def register_model(location: Location, work: Path, seed: int = 0) -> str:
    """Save an (untrained) Inception V3 for the version as training does, and register it."""
    import keras

    from facescale.training.model import build_model

    keras.utils.set_random_seed(seed)
    work.mkdir(parents=True, exist_ok=True)
    model = build_model(len(PEOPLE), IMAGE_SIZE, embedding_dim=32)
    model.save(work / "model.keras")
    labels = {
        str(i): {"name": p.replace("_", " "), "slug": p.lower().replace("_", "-")} for i, p in enumerate(PEOPLE)
    }
    (work / "labels.json").write_text(
        json.dumps({"version_id": VERSION_ID, "num_classes": len(PEOPLE), "labels": labels}), encoding="utf-8"
    )
    fingerprint = hashlib.sha256((work / "model.keras").read_bytes()).hexdigest()
    record, _ = ModelRegistry(location).register(
        work, ["model.keras", "labels.json"], version_id=VERSION_ID, num_classes=len(PEOPLE), fingerprint=fingerprint,
    )
    return record.model_id


def services_for(root: Path) -> Services:
    """The composition root on a store at ``root`` (default settings otherwise)."""
    return Services(Settings(storage=StorageSettings(root=str(root))))


@pytest.fixture(scope="session")
def served_base(lfw_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> Served:
    """The version and a model, registered and calibrated (both backends) as registration does,
    built once per session (copy it before writing: see `served`)."""
    root = tmp_path_factory.mktemp("served")
    location = Location.from_uri(str(root))
    make_version(location, lfw_dev)
    model_id = register_model(location, tmp_path_factory.mktemp("model"))
    services_for(root).calibrate_model(model_id)
    return Served(root, model_id, lfw_dev)


@pytest.fixture(scope="session")
def recognizer(served_base: Served) -> Iterator[object]:
    """The model loaded with its stored calibration once per session, read-only for tests."""
    from facescale.serving.loading import load_recognizer

    yield load_recognizer(served_base.registry, served_base.store, ServingSettings(), served_base.model_id)
