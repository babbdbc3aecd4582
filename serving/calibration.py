"""Calibrating a model for serving: the "unknown" and verification thresholds, enrolment, and their report.

Everything is measured on data the model did not train on:

- **Enrolment.** Each identity's enrolled photos are original (not augmented) photos of its
  training split, up to ``gallery_per_identity``; their embeddings are stored per backend and
  an identity's *template* is their normalised mean.
- **Verification thresholds** (per backend, ``model`` and ``dlib``): on the validation
  split's original photos. *pair*: all same-person pairs and as many different-person pairs
  (sampled, seeded), cosine similarity, the threshold of best accuracy (the LFW protocol's
  rule). *identity*: each photo against its own template and every other one, the threshold
  of best balanced accuracy. Reported: precision, recall, accuracy at the threshold and ROC AUC.
- **Unknown threshold** (identification): top-1 confidence on validation photos, accepting
  the correctly identified ones and refusing the wrong ones and, when a folder of people the
  model never saw is given, their faces too; threshold of best balanced accuracy.
- **Unseen people** (optional, the LFW protocol's idea): pairs of photos of people absent from
  the model (e.g. the rest of lfw-dev), through the whole serving path (detect, crop,
  embed), scored at the validation threshold: accuracy, precision, recall, ROC AUC.

The result is stored with the registered model under ``files/calibration/`` (the JSON
report and one ``.npz`` of enrolled embeddings per backend) and summarised in its record.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from facescale.errors import ConfigError, NotFoundError
from facescale.serving.images import ImageLimits, ImageRejected, load_image
from facescale.serving.recognizer import BACKENDS, Backend, Recognizer
from facescale.storage import DatasetStore, ModelRegistry
from facescale.storage.identities import name_key

log = logging.getLogger(__name__)

CALIBRATION_PREFIX = "calibration"
REPORT_FILE = "calibration.json"
FORMAT = 1
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

Kind = Literal["pair", "identity"]
Progress = Callable[[str], None]


@dataclass
class Gallery:
    """Enrolled embeddings of one backend: ``labels[i]`` is the identity of ``embeddings[i]``."""

    labels: np.ndarray  # (n,) int
    embeddings: np.ndarray  # (n, d) float32 unit rows
    _templates: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def template(self, label: int) -> np.ndarray | None:
        if label not in self._templates:
            rows = self.embeddings[self.labels == label]
            if len(rows) == 0:
                return None
            mean = rows.mean(axis=0)
            self._templates[label] = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        return self._templates[label]

    def count(self, label: int) -> int:
        return int(np.sum(self.labels == label))


@dataclass
class Calibration:
    """Thresholds, enrolment and the report of one model."""

    model_id: str
    unknown_threshold: float
    thresholds: dict[str, dict[str, float]]  # backend -> {"pair": t, "identity": t}
    report: dict[str, Any]
    galleries: dict[Backend, Gallery]

    def threshold(self, backend: Backend, kind: Kind) -> float:
        try:
            return self.thresholds[backend][kind]
        except KeyError:
            raise ConfigError(f"model {self.model_id} has no {kind} threshold for the {backend} backend") from None

    def template(self, label: int, backend: Backend) -> np.ndarray | None:
        gallery = self.galleries.get(backend)
        return None if gallery is None else gallery.template(label)

    def enrolled(self, label: int, backend: Backend) -> int:
        gallery = self.galleries.get(backend)
        return 0 if gallery is None else gallery.count(label)

    # -- files ---------------------------------------------------------------------------------
    def save(self, directory: Path) -> list[str]:
        """Write the report and galleries into ``directory``; return the file names."""
        from facescale.storage.fs import local_atomic_path

        directory.mkdir(parents=True, exist_ok=True)
        names = []
        for backend, gallery in self.galleries.items():
            name = f"gallery-{backend}.npz"
            with local_atomic_path(directory / name) as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(fh, labels=gallery.labels, embeddings=gallery.embeddings)
            names.append(name)
        doc = {
            "format": FORMAT,
            "model_id": self.model_id,
            "unknown_threshold": self.unknown_threshold,
            "thresholds": self.thresholds,
            "report": self.report,
        }
        with local_atomic_path(directory / REPORT_FILE) as tmp:
            Path(tmp).write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")
        return [REPORT_FILE, *names]

    @classmethod
    def load(cls, directory: Path) -> Calibration:
        path = directory / REPORT_FILE
        if not path.is_file():
            raise NotFoundError(f"no calibration at {directory}")
        doc = json.loads(path.read_text(encoding="utf-8"))
        galleries: dict[Backend, Gallery] = {}
        for backend in BACKENDS:
            npz = directory / f"gallery-{backend}.npz"
            if npz.is_file():
                with np.load(npz) as data:
                    galleries[backend] = Gallery(data["labels"].astype(np.int64), data["embeddings"].astype(np.float32))
        return cls(doc["model_id"], float(doc["unknown_threshold"]), doc["thresholds"], doc["report"], galleries)


# -- measuring -------------------------------------------------------------------------------------
@dataclass
class _Photos:
    labels: list[int] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)


def read_originals(
    store: DatasetStore, version_id: str, labels: Sequence[int], gallery_per_identity: int
) -> tuple[_Photos, _Photos]:
    """The version's original photos: up to ``gallery_per_identity`` train ones per label, and all val ones."""
    wanted = set(labels)
    gallery, val = _Photos(), _Photos()
    per_label: dict[int, int] = defaultdict(int)
    columns = ["label", "split", "aug_index", "image"]
    for batch in store.iter_batches(version_id, columns=columns, batch_size=512):
        rows = batch.to_pydict()
        for label, split, aug, data in zip(rows["label"], rows["split"], rows["aug_index"], rows["image"], strict=True):
            if aug != 0 or label not in wanted or split not in ("train", "val"):
                continue
            if split == "train":
                if per_label[label] >= gallery_per_identity:
                    continue
                per_label[label] += 1
                target = gallery
            else:
                target = val
            crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if crop is not None:
                target.labels.append(int(label))
                target.crops.append(crop)
    return gallery, val


def best_threshold(scores: np.ndarray, positive: np.ndarray, balanced: bool = False) -> float:
    """The score threshold (``score >= t`` means positive) of best accuracy, or best balanced accuracy."""
    p, n = int(positive.sum()), int((~positive).sum())
    if p == 0 or n == 0:
        raise ConfigError("cannot calibrate a threshold without both positive and negative examples")
    fpr, tpr, thresholds = roc_curve(positive, scores)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    gain = (tpr - fpr) if balanced else (tpr * p + (1 - fpr) * n)
    return float(thresholds[int(np.argmax(gain))])


def score_at(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, precision, recall and ROC AUC of ``score >= threshold``."""
    predicted = scores >= threshold
    tp = int(np.sum(predicted & positive))
    fp = int(np.sum(predicted & ~positive))
    fn = int(np.sum(~predicted & positive))
    both = bool(positive.any() and (~positive).any())
    return {
        "threshold": round(float(threshold), 6),
        "pairs": len(scores),
        "positives": int(positive.sum()),
        "accuracy": round(float(np.mean(predicted == positive)), 4),
        "balanced_accuracy": round(
            float((tp / max(tp + fn, 1) + np.sum(~predicted & ~positive) / max(int((~positive).sum()), 1)) / 2), 4
        ),
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "roc_auc": round(float(roc_auc_score(positive, scores)), 4) if both else None,
    }


def sample_pairs(labels: Sequence[int], max_pairs: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) and whether they are the same identity: same-identity pairs (sampled down
    to ``max_pairs // 2``) and as many different-identity ones."""
    by_label: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    same = [(a, b) for idx in by_label.values() for k, a in enumerate(idx) for b in idx[k + 1 :]]
    half = max(1, max_pairs // 2)
    if len(same) > half:
        same = rng.sample(same, half)
    different: set[tuple[int, int]] = set()
    n = len(labels)
    total_different = n * (n - 1) // 2 - sum(len(v) * (len(v) - 1) // 2 for v in by_label.values())
    goal = min(max(len(same), 1), total_different)
    while len(different) < goal:
        a, b = sorted(rng.sample(range(n), 2))
        if labels[a] != labels[b]:
            different.add((a, b))
    pairs = same + sorted(different)
    truth = np.array([True] * len(same) + [False] * len(different))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2), truth


def pair_similarities(vectors: np.ndarray, pairs: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of index pairs of unit ``vectors``, and their truth, leaving out pairs with a NaN row."""
    usable = np.all(np.isfinite(vectors), axis=1)
    keep = usable[pairs[:, 0]] & usable[pairs[:, 1]]
    pairs = pairs[keep]
    return np.einsum("ij,ij->i", vectors[pairs[:, 0]], vectors[pairs[:, 1]]), truth[keep]


def unseen_photos(
    folder: Path, known: set[str], max_identities: int, rng: random.Random
) -> dict[str, list[Path]]:
    """People of a one-folder-per-person tree (lfw-dev's layout) whom the model does not know, with 2+ photos."""
    if not folder.is_dir():
        raise NotFoundError(f"not a folder of people: {folder}")
    people = {}
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        name = person.name.replace("_", " ")
        if name_key(name) in known:
            continue
        photos = sorted(p for p in person.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
        if len(photos) >= 2:
            people[name] = photos
    if len(people) > max_identities:
        people = {k: people[k] for k in sorted(rng.sample(sorted(people), max_identities))}
    return people


def calibrate(
    recognizer: Recognizer,
    store: DatasetStore,
    *,
    backends: Sequence[Backend] = BACKENDS,
    gallery_per_identity: int = 10,
    max_pairs: int = 4000,
    unseen: Path | None = None,
    unseen_identities: int = 200,
    limits: ImageLimits | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Calibration:
    """Measure a model's serving thresholds and enrol its identities (see the module doc).

    Args:
        recognizer: the loaded model.
        store: the dataset store holding the model's version.
        backends: embedding backends to calibrate.
        gallery_per_identity: enrolled training photos per identity.
        max_pairs: validation pairs per backend (half same-person).
        unseen: optional folder of people (one sub-folder each) for the unseen-pairs report
            and as known-unknowns for the identification threshold.
        unseen_identities: at most this many unseen people are used.
        limits: image limits for the unseen photos.
        seed: pair sampling.
        progress: called with a line per step.

    Returns:
        The `Calibration` (not yet stored: see `store_calibration`).
    """
    say = progress or (lambda line: log.info("%s", line))
    rng = random.Random(seed)
    gallery, val = read_originals(store, recognizer.version_id, sorted(recognizer.labels), gallery_per_identity)
    if len(set(val.labels)) < 2:
        raise ConfigError(
            f"dataset version {recognizer.version_id} has validation photos of fewer than 2 identities: "
            "nothing to calibrate verification on"
        )
    say(f"enrolment: {len(gallery.crops)} training photos; validation: {len(val.crops)} photos of "
        f"{len(set(val.labels))} identities")
    val_labels = np.array(val.labels)
    probabilities, model_val = recognizer.predict(val.crops)

    unseen_crops: list[np.ndarray] = []
    unseen_people: list[int] = []
    unseen_report: dict[str, Any] = {}
    if unseen is not None:
        known = {name_key(v["name"]) for v in recognizer.labels.values()}
        people = unseen_photos(unseen, known, unseen_identities, rng)
        refused: dict[str, int] = defaultdict(int)
        for index, (_, photos) in enumerate(people.items()):
            for photo in photos:
                try:
                    image = load_image(photo.read_bytes(), limits or ImageLimits(), photo.name)
                    unseen_crops.append(recognizer.crop(image, recognizer.single_face(image, photo.name)))
                    unseen_people.append(index)
                except ImageRejected as exc:
                    refused[exc.reason] += 1
        say(f"unseen people: {len(people)} from {unseen}, {len(unseen_crops)} faces "
            f"({sum(refused.values())} photos refused: {dict(refused)})")
        unseen_report = {"folder": str(unseen), "people": len(people), "faces": len(unseen_crops),
                         "refused": dict(refused)}

    # Identification: top-1 confidence separates right answers from wrong ones and strangers.
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == val_labels
    scores, accept = confidence, correct
    if unseen_crops:
        unseen_probabilities, model_unseen = recognizer.predict(unseen_crops)
        scores = np.concatenate([confidence, unseen_probabilities.max(axis=1)])
        accept = np.concatenate([correct, np.zeros(len(unseen_crops), bool)])
    if accept.all() or not accept.any():
        unknown_threshold = 0.5
        identify = {"note": "no right/wrong mix to calibrate on: 0.5 kept", "val_top1": float(correct.mean())}
    else:
        unknown_threshold = best_threshold(scores, accept, balanced=True)
        identify = score_at(scores, accept, unknown_threshold)
        identify["val_top1"] = round(float(correct.mean()), 4)
    identify["unseen_faces"] = len(unseen_crops)
    say(f"identify: unknown below top-1 confidence {unknown_threshold:.4f}")

    thresholds: dict[str, dict[str, float]] = {}
    galleries: dict[Backend, Gallery] = {}
    report: dict[str, Any] = {"identify": identify, "backends": {}, "unseen": unseen_report}
    pair_index, pair_truth = sample_pairs(val.labels, max_pairs, rng)
    unseen_pairs = sample_pairs(unseen_people, max_pairs, rng) if len(set(unseen_people)) >= 2 else None
    for backend in backends:
        say(f"{backend}: embedding {len(gallery.crops) + len(val.crops) + len(unseen_crops)} photos")
        vectors = model_val if backend == "model" else recognizer.embed(val.crops, backend)
        enrolled = recognizer.embed(gallery.crops, backend)
        ok = np.all(np.isfinite(enrolled), axis=1)
        galleries[backend] = Gallery(np.array(gallery.labels, np.int64)[ok], enrolled[ok].astype(np.float32))
        usable = np.all(np.isfinite(vectors), axis=1)

        similarity, truth = pair_similarities(vectors, pair_index, pair_truth)
        pair_t = best_threshold(similarity, truth)

        templates = {label: galleries[backend].template(label) for label in sorted(set(gallery.labels))}
        enrolled_labels = [label for label, t in templates.items() if t is not None]
        matrix = np.stack([t for t in templates.values() if t is not None])  # in enrolled_labels order
        column = {label: i for i, label in enumerate(enrolled_labels)}
        rows = [i for i in range(len(val.labels)) if usable[i] and val.labels[i] in column]
        sims = vectors[rows] @ matrix.T
        own = np.array([column[val.labels[i]] for i in rows])
        positive = np.zeros_like(sims, dtype=bool)
        positive[np.arange(len(rows)), own] = True
        identity_t = best_threshold(sims.ravel(), positive.ravel(), balanced=True)

        thresholds[backend] = {"pair": round(pair_t, 6), "identity": round(identity_t, 6)}
        entry: dict[str, Any] = {
            "pairs": score_at(similarity, truth, pair_t),
            "identity": score_at(sims.ravel(), positive.ravel(), identity_t),
            "enrolled": len(galleries[backend].labels),
            "no_embedding": int((~usable).sum() + (~ok).sum()),
        }
        if unseen_pairs is not None:
            u_vectors = model_unseen if backend == "model" else recognizer.embed(unseen_crops, backend)
            u_sim, u_truth = pair_similarities(u_vectors, *unseen_pairs)
            entry["unseen_pairs"] = score_at(u_sim, u_truth, pair_t)
        report["backends"][backend] = entry
        scored = entry["pairs"]
        line = f"{backend}: pair threshold {pair_t:.4f} (val AUC {scored['roc_auc']}, acc {scored['accuracy']})"
        if "unseen_pairs" in entry:
            line += f"; unseen pairs acc {entry['unseen_pairs']['accuracy']}, AUC {entry['unseen_pairs']['roc_auc']}"
        say(line)
    report["val_photos"] = len(val.crops)
    report["gallery_per_identity"] = gallery_per_identity
    report["seed"] = seed
    return Calibration(recognizer.model_id, unknown_threshold, thresholds, report, galleries)


def store_calibration(registry: ModelRegistry, calibration: Calibration, work_dir: Path | None = None) -> None:
    """Store a calibration with its model (``files/calibration/``) and its summary in the record.

    The files are written to ``work_dir`` first (a temporary directory by default).
    """
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="facescale-calibration-") as work:
            store_calibration(registry, calibration, Path(work))
        return
    names = calibration.save(work_dir)
    summary = {
        "unknown_threshold": calibration.unknown_threshold,
        "thresholds": calibration.thresholds,
        "report": calibration.report,
    }
    registry.add_files(
        calibration.model_id, work_dir, names, prefix=CALIBRATION_PREFIX, metrics={"calibration": summary}
    )


def load_calibration(model_dir: Path) -> Calibration | None:
    """The calibration stored with a model (its local files directory), or None."""
    directory = model_dir / CALIBRATION_PREFIX
    return Calibration.load(directory) if (directory / REPORT_FILE).is_file() else None
