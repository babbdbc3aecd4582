"""Training fixtures: a small CURATED version of real lfw-dev crops, and the training runs on it.

`make_version` is a plain function so that tests can build the same version on any
`Location` (a local directory, ``memory://``).

Every training run is a child process (`_train_proc.py`): logical CPU devices must be set
before TensorFlow starts, and a SIGKILL must hit a real process. The runs that test the
training mechanics (determinism, resume, mirroring, the leaky baseline, warm start) use the
tiny backbone (`facescale.training.model`, traced in seconds); one run, ``inception``,
trains the real Inception V3 for what is about it (its stem's filters and feature maps, the
evaluation plots). Runs the selected tests need are started when the session's first
training test starts (`training_runs`, autouse) and run beside the in-process tests; each
test then waits for the runs it reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from facescale.storage import CropStore, DatasetStore, IdentityEntry, Location, ShardSizing

TRAIN_PROC = Path(__file__).with_name("_train_proc.py")
VERSION_ID = "20261130T000000Z-train1"
# (folder in lfw-dev, label): labels have a gap, as after an identity was removed
PEOPLE = (("Colin_Powell", 0), ("Tony_Blair", 2), ("Donald_Rumsfeld", 5))
SPLIT_PLAN = ("train",) * 8 + ("val",) * 2 + ("test",) * 2  # per identity
CROP_SIZE = 96
# 36 rows -> 3 shards (15, 15, 6) of row groups of 5 with mixed splits
SIZING = ShardSizing(rows_per_row_group=5, max_rows_per_shard=15)


@dataclass(frozen=True)
class Curated:
    """A committed CURATED version and the rows it holds."""

    location: Location
    version_id: str
    rows: tuple[dict[str, Any], ...]

    @property
    def store(self) -> DatasetStore:
        return DatasetStore(self.location)

    def split(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["split"] == name]


def face_crop(path: Path, size: int = CROP_SIZE, *, mirror: bool = False, shift: int = 0) -> bytes:
    """The centre of an LFW photo (where the deep-funneled face is), as a ``size`` px JPEG.

    ``mirror`` and ``shift`` (pixels) make an augmented copy of it.
    """
    with Image.open(path) as photo:
        rgb = photo.convert("RGB")
        w, h = rgb.size
        box = (w // 4 + shift, h // 4 + shift, w - w // 4 + shift, h - h // 4 + shift)
        crop = rgb.crop(box).resize((size, size), Image.Resampling.BILINEAR)
        if mirror:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def crop_row(sample: dict[str, Any], embedding: Any) -> dict[str, Any]:
    """The crop-cache row curation writes for a version's original ``sample`` (``embedding`` None: dlib gave none)."""
    return {
        "image_id": sample["source_image_id"], "run_id": "ingest-test", "identity": sample["identity"],
        "identity_slug": sample["identity_slug"], "error": None if embedding is not None else "no_embedding",
        "crop": sample["image"], "face_box": sample["face_box"], "sharpness": 50.0, "brightness": 120.0,
        "contrast": 40.0, "faces": 1, "phash": None, "phash_windows": None,
        "embedding": None if embedding is None else [float(v) for v in embedding],
    }


def write_crops(location: Location, name: str, rows: list[dict[str, Any]]) -> None:
    """Commit one crop-cache chunk of ``rows`` (`crop_row`) under ``location``."""
    crops = CropStore(location)
    with crops.open(f"chunk-{name}", "params-test", [f"ingest-test/{name}"]) as writer:
        writer.write(rows)
        writer.commit()


def make_version(
    location: Location,
    photos: Path,
    version_id: str = VERSION_ID,
    people: tuple[tuple[str, int], ...] = PEOPLE,
    copies: int = 1,
) -> Curated:
    """Write a CURATED version of 12 crops per person (8 train, 2 val, 2 test), as curation would.

    ``copies`` > 1 adds augmented copies of each train photo (mirrored, ``aug_index`` 1..),
    as curation's augmentation does. No crop cache: `write_crops` adds one.
    """
    store = DatasetStore(location, SIZING)
    rows: list[dict[str, Any]] = []
    entries = []
    for folder, label in people:
        name = folder.replace("_", " ")
        slug = folder.lower().replace("_", "-")
        files = sorted((photos / folder).glob("*.jpg"))[: len(SPLIT_PLAN)]
        counts = {"train": 0, "val": 0, "test": 0}
        for path, split in zip(files, SPLIT_PLAN, strict=True):
            source = hashlib.sha256(path.read_bytes()).hexdigest()
            for aug in range(copies if split == "train" else 1):
                counts[split] += 1
                rows.append(
                    {
                        "sample_id": f"{source}-{aug:03d}",
                        "source_image_id": source,
                        "identity": name,
                        "identity_slug": slug,
                        "label": label,
                        "split": split,
                        "aug_index": aug,
                        "face_box": {"x": 62, "y": 62, "w": 125, "h": 125},
                        "image": face_crop(path, mirror=aug % 2 == 1, shift=aug // 2),
                        "width": CROP_SIZE,
                        "height": CROP_SIZE,
                        "sharpness": 50.0,
                        "brightness": 120.0,
                        "contrast": 40.0,
                    }
                )
        entries.append(IdentityEntry(name=name, slug=slug, label=label, counts=counts, sources=len(files)))
    with store.create(version_id, parent=None, config={"seed": 0}) as writer:
        writer.write(rows)
        writer.commit(entries)
    return Curated(location, version_id, tuple(rows))


@pytest.fixture(scope="session")
def curated(lfw_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> Curated:
    """The small version on a local directory, shared by the session (read-only)."""
    root = tmp_path_factory.mktemp("curated")
    return make_version(Location.from_uri(str(root)), lfw_dev)


GROWN_VERSION_ID = "20261201T000000Z-grown1"
# the next version: one more identity (a new label), the three others as before
GROWN_PEOPLE = (*PEOPLE, ("George_W_Bush", 7))
AUGMENTED_VERSION_ID = "20261130T000000Z-aug1"


@pytest.fixture(scope="session")
def grown_factory(lfw_dev: Path) -> Callable[[Location], Curated]:
    """Write, on a Location, the next version: the three people plus George W Bush (label 7)."""
    return lambda location: make_version(location, lfw_dev, GROWN_VERSION_ID, GROWN_PEOPLE)


@pytest.fixture(scope="session")
def augmented(lfw_dev: Path, tmp_path_factory: pytest.TempPathFactory) -> Curated:
    """The small version with 3 copies of every train photo (24 train samples per person)."""
    root = tmp_path_factory.mktemp("augmented")
    return make_version(Location.from_uri(str(root)), lfw_dev, AUGMENTED_VERSION_ID, copies=3)


@pytest.fixture(scope="session")
def version_factory(lfw_dev: Path) -> Callable[[Location], Curated]:
    """Build the same small version on another Location (``memory://`` ...)."""
    return lambda location: make_version(location, lfw_dev)


# -- training runs ---------------------------------------------------------------------------
RUN_TIMEOUT_S = 1100  # below the tests' own timeout (test_train.RUN_WAIT_S)
# Reachable from the first epoch on (the three real classes soon outrank the three unused
# labels, so the top 5 of 6 hold the truth), but not before min_epochs = 2: ends by threshold.
STOPPING = {
    "backbone": "tiny",
    "image_size": 75,
    "batch_size": 8,
    "max_epochs": 4,
    "min_epochs": 2,
    "stop_metric": "val_top5_accuracy",
    "stop_threshold": 0.01,
}
# Unreachable: ends by max_epochs.
PLAIN = {
    "backbone": "tiny", "image_size": 75, "batch_size": 4, "max_epochs": 2, "stop_metric": "val_loss",
    "stop_threshold": 1e-6,
}
RUNS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "whole": (STOPPING, ("--max-steps", "2")),  # uninterrupted, 1 replica (the default strategy)
    "again": (STOPPING, ("--max-steps", "2")),  # the whole run once more, beside it in another process
    "killed": (STOPPING, ("--max-steps", "2", "--kill-at", "1:0")),  # SIGKILLed in epoch 2
    "resumed": (STOPPING, ("--max-steps", "2")),  # the killed run's directory, rerun
    "mirrored": (PLAIN, ("--max-steps", "1", "--replicas", "2")),  # 2 logical CPUs: global batch 8
    "leaky": (STOPPING, ("--max-steps", "2", "--leaky")),  # the seed's split of the augmented version
    "inception": (STOPPING | {"backbone": "inception_v3"}, ("--max-steps", "2")),  # the real backbone
}
NEEDS = {
    "whole_run": ("whole",),
    "again_run": ("again",),
    "resumed_runs": ("killed",),
    "mirrored_run": ("mirrored",),
    "leaky_run": ("leaky",),
    "inception_run": ("inception",),
}


@dataclass
class Run:
    """A finished child training run."""

    out: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        """The TrainResult it printed (fails the test with its log when it did not finish)."""
        assert self.returncode == 0, self.stderr[-6000:]
        return json.loads(self.stdout.strip().splitlines()[-1])


class TrainingRuns:
    """Starts child training runs on the shared version and waits for them."""

    def __init__(self, curated: Curated, augmented: Curated, base: Path) -> None:
        self.curated, self.augmented, self.base = curated, augmented, base
        self._procs: dict[str, subprocess.Popen] = {}
        self._done: dict[str, Run] = {}

    def out(self, name: str) -> Path:
        return self.base / ("killed" if name == "resumed" else name)

    def start(self, name: str) -> None:
        if name in self._procs:
            return
        settings, extra = RUNS[name]
        data = self.augmented if name == "leaky" else self.curated
        command = [
            sys.executable,
            str(TRAIN_PROC),
            data.location.root,
            data.version_id,
            str(self.out(name)),
            "--settings",
            json.dumps(settings),
            *extra,
        ]
        self._procs[name] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self, name: str) -> Run:
        if name not in self._done:
            self.start(name)
            proc = self._procs[name]
            try:
                stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            self._done[name] = Run(self.out(name), proc.returncode, stdout, stderr)
        return self._done[name]

    def stop(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(scope="session", autouse=True)
def training_runs(
    request: pytest.FixtureRequest, curated: Curated, augmented: Curated, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrainingRuns]:
    """Start, in the background, every training run that the selected tests will read."""
    runs = TrainingRuns(curated, augmented, tmp_path_factory.mktemp("train"))
    wanted = {f for item in request.session.items for f in getattr(item, "fixturenames", ())}
    for fixture, names in NEEDS.items():
        if fixture in wanted:
            for name in names:
                runs.start(name)
    yield runs
    runs.stop()


@pytest.fixture(scope="session")
def whole_run(training_runs: TrainingRuns) -> Run:
    """An uninterrupted run: 1 replica, 2 steps/epoch, stops by threshold after epoch 2."""
    return training_runs.wait("whole")


@pytest.fixture(scope="session")
def inception_run(training_runs: TrainingRuns) -> Run:
    """The whole run's settings with the real Inception V3 backbone."""
    return training_runs.wait("inception")


@pytest.fixture(scope="session")
def again_run(training_runs: TrainingRuns) -> Run:
    """The whole run's settings on the same version, run in another process at the same time."""
    return training_runs.wait("again")


@dataclass
class Resumed:
    killed: Run
    killed_state: dict[str, Any]  # backup/state.json as the kill left it
    resumed: Run


@pytest.fixture(scope="session")
def resumed_runs(training_runs: TrainingRuns) -> Resumed:
    """The whole run's twin, SIGKILLed after batch 1 of epoch 2, then rerun in its directory."""
    killed = training_runs.wait("killed")
    state = json.loads((killed.out / "backup" / "state.json").read_text())
    return Resumed(killed, state, training_runs.wait("resumed"))


@pytest.fixture(scope="session")
def mirrored_run(training_runs: TrainingRuns) -> Run:
    """Two logical CPU replicas of batch 4, 1 step/epoch, 2 epochs (max_epochs)."""
    return training_runs.wait("mirrored")


@pytest.fixture(scope="session")
def leaky_run(training_runs: TrainingRuns) -> Run:
    """`leaky_baseline` on the augmented version with the whole run's settings (its report printed)."""
    return training_runs.wait("leaky")
