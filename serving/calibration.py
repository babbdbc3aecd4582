"""Calibrating a model for serving: the "unknown" and verification thresholds, enrolment, and their report.

Everything is measured on data the model did not train on:

- **Enrolment.** Each identity's enrolled photos are original (not augmented) photos of its
  training split, up to ``gallery_per_identity``; their embeddings are stored per backend and
  an identity's *template* is their normalised mean. The ``dlib`` backend's embeddings of the
  version's photos are the ones curation already computed and kept in the crop cache (the same
  crop, the same face box), so registering a model does not embed them again.
- **Verification thresholds** (per backend, ``model`` and ``dlib``): on the validation
  split's original photos. *pair*: all same-person pairs and as many different-person pairs
  (sampled, seeded), cosine similarity, the threshold of best accuracy (the LFW protocol's
  rule). *identity*: each photo against its own template and every other one, the threshold
  of best balanced accuracy. Reported: precision, recall, accuracy at the threshold and ROC AUC.
- **Identification and its unknown threshold**, per backend, on the validation photos: the
  ``model`` backend answers with its softmax (score: top-1 probability), the ``dlib`` backend
  with the identity of the nearest enrolled photo (score: its cosine similarity). The
  threshold accepts the right answers and refuses the wrong ones and strangers; threshold of
  best balanced accuracy. Strangers: for the ``dlib`` gallery, every validation photo once
  more with its own identity's enrolled photos left out (a person the gallery does not
  know, leave-one-identity-out); for both backends, when a folder of people the model never
  saw is given, their faces.
- **The default backend**: the one whose answers on the validation photos are most often
  right at its own threshold (an "unknown" counts as wrong), ties broken by the validation
  pairs' ROC AUC. ``identify``, ``verify``, the API and the page use it unless asked otherwise.
- **Unseen people** (optional, the LFW protocol's idea): pairs of photos of people absent from
  the model (e.g. the rest of lfw-dev), through the whole serving path (detect, crop,
  embed), scored at the validation threshold: accuracy, precision, recall, ROC AUC.

The result is stored with the registered model under ``files/calibration/`` (the JSON
report and one ``.npz`` of enrolled embeddings per backend) and summarised in its record
(``metrics.calibration``: thresholds, the default backend and each backend's scores). It is
made when the model is registered (`facescale.app.services.Services.register_model`), so the
first query on a model never waits for it; ``facescale calibrate`` makes it again.
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
from typing import Any, Literal, cast

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from facescale.errors import ConfigError, NotFoundError
from facescale.serving.images import ImageLimits, ImageRejected, load_image
from facescale.serving.recognizer import BACKENDS, Backend, Recognizer
from facescale.storage import CropStore, DatasetStore, ModelRegistry
from facescale.storage.identities import name_key
from facescale.storage.schemas import EMBEDDING_DIM

log = logging.getLogger(__name__)

CALIBRATION_PREFIX = "calibration"
REPORT_FILE = "calibration.json"
FORMAT = 2
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

Kind = Literal["pair", "identity"]
Progress = Callable[[str], None]


@dataclass
class Gallery:
    """Enrolled embeddings of one backend: ``labels[i]`` is the identity of ``embeddings[i]``."""

    labels: np.ndarray  # (n,) int
    embeddings: np.ndarray  # (n, d) float32 unit rows
    ids: np.ndarray | None = None  # (n,) str: each row's source photo (an erasure drops rows by it)
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

    def identity_scores(self, vectors: np.ndarray, classes: int) -> np.ndarray:
        """Per row of unit ``vectors``, each label's highest cosine similarity to one of its enrolled
        photos ``(n, classes)`` (the nearest-identity rule); -inf for a label with none, NaN rows stay NaN."""
        out = np.full((len(vectors), classes), -np.inf, np.float32)
        known = self.labels < classes
        if len(vectors) == 0 or not known.any():
            return out
        labels, embeddings = self.labels[known], self.embeddings[known]
        order = np.argsort(labels, kind="stable")
        present, starts = np.unique(labels[order], return_index=True)
        similarities = np.asarray(vectors, np.float32) @ embeddings[order].T
        out[:, present] = np.maximum.reduceat(similarities, starts, axis=1)
        return out


@dataclass
class Calibration:
    """Thresholds, enrolment and the report of one model."""

    model_id: str
    unknown_thresholds: dict[str, float]  # backend -> identification score under which a face is unknown
    thresholds: dict[str, dict[str, float]]  # backend -> {"pair": t, "identity": t}
    report: dict[str, Any]
    galleries: dict[Backend, Gallery]
    default_backend: Backend = "model"

    @property
    def unknown_threshold(self) -> float:
        """The default backend's unknown threshold."""
        return self.unknown_for(self.default_backend)

    def unknown_for(self, backend: Backend) -> float:
        try:
            return self.unknown_thresholds[backend]
        except KeyError:
            raise ConfigError(
                f"model {self.model_id} has no identification threshold for the {backend} backend: "
                f"run `facescale calibrate {self.model_id}`"
            ) from None

    def summary(self) -> dict[str, Any]:
        """What the model record keeps (``metrics.calibration``)."""
        return {
            "default_backend": self.default_backend,
            "unknown_thresholds": self.unknown_thresholds,
            "thresholds": self.thresholds,
            "report": self.report,
        }

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
                arrays = {"labels": gallery.labels, "embeddings": gallery.embeddings}
                if gallery.ids is not None:
                    arrays["ids"] = gallery.ids.astype(str)
                np.savez_compressed(fh, allow_pickle=False, **arrays)
            names.append(name)
        doc = {"format": FORMAT, "model_id": self.model_id, **self.summary()}
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
                    ids = data["ids"].astype(str) if "ids" in data.files else None
                    galleries[backend] = Gallery(
                        data["labels"].astype(np.int64), data["embeddings"].astype(np.float32), ids
                    )
        if doc.get("format", 1) == 1:  # one threshold, the model backend's softmax
            unknown = {"model": float(doc["unknown_threshold"])}
        else:
            unknown = {k: float(v) for k, v in doc["unknown_thresholds"].items()}
        return cls(
            doc["model_id"], unknown, doc["thresholds"], doc["report"], galleries,
            default_backend=doc.get("default_backend", "model"),
        )


# -- measuring -------------------------------------------------------------------------------------
@dataclass
class _Photos:
    labels: list[int] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # each crop's source photo (``source_image_id``)


def originals(
    store: DatasetStore, version_id: str, caps: dict[str, int | None], labels: Sequence[int] | None = None
) -> dict[str, _Photos]:
    """A version's original (not augmented) photos as curated crops, in one pass over its shards: per split of
    ``caps``, at most that many per label (None: all), of ``labels`` only when given."""
    wanted = None if labels is None else set(labels)
    found = {split: _Photos() for split in caps}
    taken: dict[tuple[str, int], int] = defaultdict(int)
    columns = ["label", "split", "aug_index", "image", "source_image_id"]
    for batch in store.iter_batches(version_id, columns=columns, batch_size=512):
        rows = batch.to_pydict()
        for label, split, aug, data, source in zip(
            rows["label"], rows["split"], rows["aug_index"], rows["image"], rows["source_image_id"], strict=True
        ):
            if aug != 0 or split not in caps or (wanted is not None and label not in wanted):
                continue
            cap = caps[split]
            if cap is not None and taken[split, label] >= cap:
                continue
            crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if crop is not None:
                taken[split, label] += 1
                found[split].labels.append(int(label))
                found[split].crops.append(crop)
                found[split].ids.append(source)
    return found


def read_originals(
    store: DatasetStore, version_id: str, labels: Sequence[int], gallery_per_identity: int
) -> tuple[_Photos, _Photos]:
    """The version's original photos: up to ``gallery_per_identity`` train ones per label, and all val ones."""
    found = originals(store, version_id, {"train": gallery_per_identity, "val": None}, labels)
    return found["train"], found["val"]


def identification_on(
    recognizer: Recognizer, photos: _Photos, split: str, backends: Sequence[Backend] = BACKENDS
) -> dict[str, dict[str, Any]]:
    """What each backend answers on a split's original photos (`originals`; the test split: none trained on
    nor enrolled): top-1, the share answered right at the backend's unknown threshold ("unknown" counts as
    wrong), the share called unknown."""
    labels = np.array(photos.labels, np.int64)
    report: dict[str, dict[str, Any]] = {}
    for backend in backends:
        _, best, top1 = best_answers(recognizer.identity_scores(photos.crops, backend), labels)
        known = best >= recognizer.unknown_threshold(backend)
        report[backend] = {
            "split": split,
            "photos": len(labels),
            "top1": round(float(top1.mean()), 4) if len(labels) else None,
            "answered_right": round(float(np.mean(top1 & known)), 4) if len(labels) else None,
            "unknown": round(float(np.mean(~known)), 4) if len(labels) else None,
        }
    return report


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
    crops: CropStore | None = None,
) -> Calibration:
    """Measure a model's serving thresholds, enrol its identities and choose its default backend (module doc).

    Args:
        recognizer: the loaded model.
        store: the dataset store holding the model's version.
        backends: backends to calibrate (the default is chosen among them).
        gallery_per_identity: enrolled training photos per identity.
        max_pairs: validation pairs per backend (half same-person).
        unseen: optional folder of people (one sub-folder each) for the unseen-pairs report
            and as known-unknowns for the identification thresholds.
        unseen_identities: at most this many unseen people are used.
        limits: image limits for the unseen photos.
        seed: pair sampling.
        progress: called with a line per step.
        crops: the store's crop cache: the dlib vectors curation computed for the same crops are
            reused instead of embedding those photos again (None: every photo is embedded).

    Returns:
        The `Calibration` (not yet stored: see `store_calibration`).
    """
    if not backends:
        raise ConfigError("calibrate needs at least one backend")
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

    thresholds: dict[str, dict[str, float]] = {}
    unknown: dict[str, float] = {}
    galleries: dict[Backend, Gallery] = {}
    report: dict[str, Any] = {"identify": {}, "backends": {}, "unseen": unseen_report}
    pair_index, pair_truth = sample_pairs(val.labels, max_pairs, rng)
    unseen_pairs = sample_pairs(unseen_people, max_pairs, rng) if len(set(unseen_people)) >= 2 else None
    classes = recognizer.classes
    cached = crops.embeddings([*gallery.ids, *val.ids]) if crops is not None and "dlib" in backends else {}
    for backend in backends:
        if backend == "model":
            say(f"{backend}: embedding {len(gallery.crops) + len(val.crops) + len(unseen_crops)} photos")
            val_scores, vectors = recognizer.predict(val.crops)
            u_scores, u_vectors = recognizer.predict(unseen_crops)
            enrolled = recognizer.embed(gallery.crops, backend)
        else:
            reused = sum(i in cached for i in [*gallery.ids, *val.ids])
            say(f"{backend}: embedding {len(gallery.crops) + len(val.crops) + len(unseen_crops) - reused} photos "
                f"({reused} embeddings reused from the crop cache)")
            vectors = _embed_cached(recognizer, val, cached, backend)
            u_vectors = recognizer.embed(unseen_crops, backend)
            enrolled = _embed_cached(recognizer, gallery, cached, backend)
        ok = np.all(np.isfinite(enrolled), axis=1)
        galleries[backend] = Gallery(
            np.array(gallery.labels, np.int64)[ok], enrolled[ok].astype(np.float32), np.array(gallery.ids, str)[ok]
        )
        usable = np.all(np.isfinite(vectors), axis=1)

        # Identification: a score per label for every validation photo, and strangers' scores.
        strangers: list[np.ndarray] = []
        if backend != "model":
            val_scores = galleries[backend].identity_scores(vectors, classes)
            u_scores = galleries[backend].identity_scores(u_vectors, classes)
            others = val_scores.copy()
            others[np.arange(len(val_labels)), val_labels] = -np.inf  # a person the gallery does not know
            strangers.append(others.max(axis=1, initial=-np.inf))
        if unseen_crops:
            strangers.append(u_scores.max(axis=1, initial=-np.inf))
        unknown[backend], report["identify"][backend] = _identification(val_scores, val_labels, strangers)
        say(f"{backend}: identify right on {report['identify'][backend]['answered_right']:.4f} of validation photos, "
            f"unknown below {unknown[backend]:.4f}")

        # Verification: pairs of validation photos, and each photo against every template.
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
            u_sim, u_truth = pair_similarities(u_vectors, *unseen_pairs)
            entry["unseen_pairs"] = score_at(u_sim, u_truth, pair_t)
        report["backends"][backend] = entry
        scored = entry["pairs"]
        line = f"{backend}: pair threshold {pair_t:.4f} (val AUC {scored['roc_auc']}, acc {scored['accuracy']})"
        if "unseen_pairs" in entry:
            line += f"; unseen pairs acc {entry['unseen_pairs']['accuracy']}, AUC {entry['unseen_pairs']['roc_auc']}"
        say(line)
    default = choose_default(report)
    say(f"default backend: {default} (identify right on {report['identify'][default]['answered_right']:.4f} "
        "of validation photos)")
    report["default_backend"] = default
    report["val_photos"] = len(val.crops)
    report["gallery_per_identity"] = gallery_per_identity
    report["seed"] = seed
    return Calibration(recognizer.model_id, unknown, thresholds, report, galleries, default_backend=default)


def _embed_cached(
    recognizer: Recognizer, photos: _Photos, cached: dict[str, np.ndarray], backend: Backend
) -> np.ndarray:
    """Unit ``backend`` embeddings of ``photos``: curation's embedding of the same crop where the crop cache
    holds one (`CropStore.embeddings`: dlib's, on the same face box; cosine >= 0.996 to serving's own on the
    demo's photos), the recognizer's for the rest."""
    missing = [k for k, source in enumerate(photos.ids) if source not in cached]
    live = recognizer.embed([photos.crops[k] for k in missing], backend)
    out = np.full((len(photos.crops), EMBEDDING_DIM), np.nan, np.float32)
    for k, source in enumerate(photos.ids):
        if source in cached:
            out[k] = cached[source]
    out[missing] = live
    return out


def best_answers(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of per-label ``scores``: whether it is usable, its best score (-inf when not) and whether
    its best label is ``labels``'s. A NaN row: no usable face for the backend (dlib); -inf: a label
    without enrolled photos."""
    finite = ~np.any(np.isnan(scores), axis=1)
    filled = np.nan_to_num(scores, nan=-np.inf)
    best = np.where(finite, filled.max(axis=1, initial=-np.inf), -np.inf)
    correct = finite & (filled.argmax(axis=1) == labels) if len(labels) else np.zeros(0, bool)
    return finite, best, correct


def _identification(
    scores: np.ndarray, labels: np.ndarray, strangers: Sequence[np.ndarray]
) -> tuple[float, dict[str, Any]]:
    """The unknown threshold of one backend and its report, from per-label ``scores`` of labelled
    photos and the best scores of strangers (faces no answer is right for)."""
    finite, best, correct = best_answers(scores, labels)
    stranger = np.concatenate(strangers) if strangers else np.zeros(0)
    stranger = stranger[np.isfinite(stranger)]
    all_scores = np.concatenate([best[finite], stranger])
    accept = np.concatenate([correct[finite], np.zeros(len(stranger), bool)])
    report: dict[str, Any] = {"val_top1": round(float(correct.mean()), 4), "strangers": len(stranger)}
    if accept.all() or not accept.any():
        threshold = 0.5
        report["note"] = "no right/wrong mix to calibrate on: 0.5 kept"
    else:
        threshold = best_threshold(all_scores, accept, balanced=True)
        report.update(score_at(all_scores, accept, threshold))
    report["answered_right"] = round(float(np.mean(correct & (best >= threshold))), 4)
    report["strangers_refused"] = round(float(np.mean(stranger < threshold)), 4) if len(stranger) else None
    return threshold, report


def choose_default(report: dict[str, Any]) -> Backend:
    """The backend whose validation answers are most often right at its threshold (ties: higher pair ROC AUC)."""
    def merit(backend: str) -> tuple[float, float]:
        auc = report["backends"][backend]["pairs"].get("roc_auc")
        return (report["identify"][backend]["answered_right"], auc if auc is not None else 0.0)

    return cast("Backend", max(report["identify"], key=merit))


def store_calibration(registry: ModelRegistry, calibration: Calibration, work_dir: Path | None = None) -> None:
    """Store a calibration with its model (``files/calibration/``) and its summary in the record.

    The files are written to ``work_dir`` first (a temporary directory by default).
    """
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="facescale-calibration-") as work:
            store_calibration(registry, calibration, Path(work))
        return
    names = calibration.save(work_dir)
    registry.add_files(
        calibration.model_id, work_dir, names, prefix=CALIBRATION_PREFIX,
        metrics={"calibration": calibration.summary()},
    )


def load_calibration(model_dir: Path) -> Calibration | None:
    """The calibration stored with a model (its local files directory), or None."""
    directory = model_dir / CALIBRATION_PREFIX
    return Calibration.load(directory) if (directory / REPORT_FILE).is_file() else None
