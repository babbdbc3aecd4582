"""A registered model, ready to serve: find faces, crop them as the dataset did, identify and embed them.

`Recognizer` holds one registered model with what serving it needs: the dataset version's
crop parameters (so a face is cropped exactly as the training crops were: same detector,
margin and crop size) and, when calibrated (at registration), the thresholds, enrolled
embeddings and chosen default backend of `facescale.serving.calibration`. Two backends
answer both questions:

- ``model``: our Inception V3 (identify: its softmax head; verify: its L2-normalised
  embedding layer). Loaded on first use only: a recognizer whose default backend is
  ``dlib`` answers without importing TensorFlow.
- ``dlib``: the pretrained 128-d ResNet of `facescale.pipeline.embeddings`, which needs no
  training (identify: the nearest enrolled photo, one gallery of the version's training
  photos per identity; verify: cosine similarity).

Every answer names the backend that gave it; without an explicit one, the calibration's
``default_backend`` (the backend that measured best on the version's validation photos) answers.

`FaceFinder` (detection and cropping as the dataset did) and `DlibEmbedder` need no model:
the LFW benchmark (`facescale.serving.benchmark`) runs the dlib backend with them alone.

Every method is safe to call from several threads at once (the API serves requests from a
thread pool): the cascades are per thread, Keras inference is re-entrant, dlib is locked.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from facescale.errors import ConfigError
from facescale.pipeline.faces import CropParams, clip_box, crop_square, faces_in_image, min_face_side
from facescale.serving.batching import Batcher
from facescale.serving.images import Box, ImageRejected

log = logging.getLogger(__name__)

Backend = Literal["model", "dlib"]
BACKENDS: tuple[Backend, ...] = ("model", "dlib")


class FaceFinder:
    """Faces found and cropped exactly as a dataset version's curation did (its `CropParams`)."""

    def __init__(self, crop: CropParams) -> None:
        self.crop_params = crop

    def detect(self, image: np.ndarray, second_pass: bool = True) -> list[Box]:
        """Boxes of every face in a BGR image that curation would accept by size (clipped to it), largest first.

        When the Haar pass finds none, dlib's HOG detector looks once more (`second_pass_faces`,
        unless ``second_pass`` is off): an independent detector, so a face the cascade misses
        (a turned head, hard light) is still answered instead of ``no_face``.
        """
        height, width = image.shape[:2]
        smallest = min_face_side(self.crop_params, width, height)
        boxes = self._accepted((f.box for f in faces_in_image(image, self.crop_params)), smallest, width, height)
        if not boxes and second_pass:
            boxes = self._accepted(second_pass_faces(image), smallest, width, height)
        return boxes

    @staticmethod
    def _accepted(found: Iterable[Box], smallest: float, width: int, height: int) -> list[Box]:
        boxes = []
        for box in found:
            if min(box[2], box[3]) < smallest:
                continue
            clipped = clip_box(box, width, height)
            if clipped is not None:
                boxes.append(clipped)
        return boxes

    def single_face(self, image: np.ndarray, name: str = "image") -> Box:
        """The one face of an image meant to show one person.

        A larger face dominating smaller ones (by the dataset's ``dominance`` ratio of areas,
        as curation decides) counts as the one face.

        Raises:
            ImageRejected: ``no_face`` or ``several_faces`` (422).
        """
        boxes = self._some_faces(image, name)
        if len(boxes) > 1 and _area(boxes[0]) < self.crop_params.dominance * _area(boxes[1]):
            raise ImageRejected(
                "several_faces", f"{name}: {len(boxes)} faces found; this needs a photo of one person", 422
            )
        return boxes[0]

    def centre_face(self, image: np.ndarray, name: str = "image") -> Box:
        """The face whose centre is nearest the image's (for photos framed on one face, as LFW's are).

        Raises:
            ImageRejected: ``no_face`` (422).
        """
        boxes = self._some_faces(image, name)
        cy, cx = image.shape[0] / 2.0, image.shape[1] / 2.0
        return min(boxes, key=lambda b: (b[0] + b[2] / 2.0 - cx) ** 2 + (b[1] + b[3] / 2.0 - cy) ** 2)

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        """The dataset's square crop of a face (BGR, ``crop_size``)."""
        return crop_square(image, box, self.crop_params.margin, self.crop_params.crop_size)

    def _some_faces(self, image: np.ndarray, name: str) -> list[Box]:
        boxes = self.detect(image)
        if not boxes:
            raise ImageRejected("no_face", f"{name}: no face found (a clear, frontal face is needed)", 422)
        return boxes


class DlibEmbedder:
    """The pretrained dlib backend on the dataset's face crops: unit 128-d vectors, one caller at a time."""

    def __init__(self, crop: CropParams) -> None:
        self.margin = crop.margin
        self._dlib: Any = None
        self._lock = threading.RLock()

    def ready(self) -> Any:
        """dlib's models, loaded once."""
        with self._lock:
            if self._dlib is None:
                from facescale.pipeline.embeddings import FaceEmbedder

                self._dlib = FaceEmbedder()
            return self._dlib

    def face_box(self, side: int) -> Box:
        """The face box inside a square crop of ``side`` pixels: the crop holds it plus ``margin`` of its side
        on each side."""
        face = round(side * (1.0 / (1.0 + 2.0 * self.margin)))
        offset = (side - face) // 2
        return (offset, offset, face, face)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Unit embeddings ``(n, 128)`` of BGR face crops; NaN rows where dlib finds no face."""
        from facescale.pipeline.embeddings import EMBEDDING_DIM

        out = np.full((len(crops), EMBEDDING_DIM), np.nan, np.float32)
        with self._lock:
            self.ready()
            for i, crop in enumerate(crops):
                vector = self._dlib.embed(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), self.face_box(crop.shape[0]))
                if vector is not None:
                    out[i] = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return out


# -- the second detector pass ---------------------------------------------------------------------
#: dlib's HOG box -> the Haar box curation crops around, measured on 732 lfw-dev photos where both
#: detectors found one face (`bench/bench_detect.py --fit`, medians): the cascade's box is 1.055x
#: the side of HOG's, its centre 0.083 HOG sides higher and 0.037 further right.
HOG_SCALE = 1.055
HOG_SHIFT_Y = -0.083
HOG_SHIFT_X = 0.037
#: Longest side the HOG pass looks at (larger photos are downscaled first; it costs ~pixels).
HOG_MAX_SIDE = 640
_hog = threading.local()


def hog_to_haar(box: tuple[float, float, float, float]) -> Box:
    """A dlib HOG box (x, y, w, h) as the Haar cascade would have drawn it: scaled about its
    centre by ``HOG_SCALE`` and moved by ``HOG_SHIFT_X``, ``HOG_SHIFT_Y`` of its side."""
    x, y, w, h = box
    side = max(w, h) * HOG_SCALE
    cx, cy = x + w / 2.0 + HOG_SHIFT_X * max(w, h), y + h / 2.0 + HOG_SHIFT_Y * max(w, h)
    return (round(cx - side / 2.0), round(cy - side / 2.0), round(side), round(side))


def second_pass_faces(image: np.ndarray, mapped: bool = True) -> list[Box]:
    """Faces dlib's HOG detector finds in a BGR (or grey) image, as Haar-style boxes (`hog_to_haar`;
    dlib's own with ``mapped`` off), largest first.

    The serving path's second, independent detector pass (`FaceFinder.detect`): only photos
    the cascade found nothing in pay for it (see bench/bench_detect.py).
    """
    detector = getattr(_hog, "detector", None)
    if detector is None:
        import dlib

        detector = _hog.detector = dlib.get_frontal_face_detector()
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    scale = min(1.0, HOG_MAX_SIDE / max(grey.shape[:2]))
    small = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1.0 else grey
    # dlib's window is 80x80: upsample once when the image is too small to hold a face that size.
    upsample = 1 if min(small.shape[:2]) < 320 else 0
    rects = detector(np.ascontiguousarray(small), upsample)
    found = [(r.left() / scale, r.top() / scale, r.width() / scale, r.height() / scale) for r in rects]
    boxes = [hog_to_haar(b) if mapped else (round(b[0]), round(b[1]), round(b[2]), round(b[3])) for b in found]
    return sorted(boxes, key=lambda b: -_area(b))


# -- answers -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One of a face's top-k identities."""

    identity: str
    slug: str
    label: int
    confidence: float


@dataclass(frozen=True)
class FaceMatch:
    """A face found in an image: its box, its top-k candidates, and the decision.

    ``identity`` is the top candidate's name, or None ("unknown") when its confidence is
    below the backend's calibrated threshold. ``confidence`` is the ``model`` backend's
    softmax probability, or the ``dlib`` backend's cosine similarity to the nearest enrolled
    photo of that identity.
    """

    box: Box
    candidates: list[Candidate]
    identity: str | None
    confidence: float
    backend: Backend = "model"
    threshold: float = 0.5

    def to_json(self) -> dict[str, Any]:
        x, y, w, h = self.box
        return {
            "box": {"x": x, "y": y, "width": w, "height": h},
            "identity": self.identity,
            "unknown": self.identity is None,
            "confidence": round(self.confidence, 6),
            "backend": self.backend,
            "threshold": self.threshold,
            "candidates": [
                {"identity": c.identity, "slug": c.slug, "label": c.label, "confidence": round(c.confidence, 6)}
                for c in self.candidates
            ],
        }


class _Network:
    """Our model's two outputs (softmax, unit embedding) as one traced function, loaded on first use."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._forward: Any = None
        self._batcher: Batcher | None = None
        self._max_batch = 1
        self.image_size = 0

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._ready()
        if self._batcher is not None:
            probabilities, embeddings = self._batcher(batch)
        else:
            probabilities, embeddings = self._forward(batch)
        return np.asarray(probabilities), np.asarray(embeddings)

    def size(self) -> int:
        self._ready()
        return self.image_size

    def batch_requests(self, max_batch: int) -> None:
        self._max_batch = max_batch
        if self._forward is not None:
            self._start_batcher()

    def _start_batcher(self) -> None:
        if self._max_batch > 1 and self._batcher is None:
            forward = self._forward
            self._batcher = Batcher(lambda x: tuple(np.asarray(t) for t in forward(x)), self._max_batch)

    def _ready(self) -> None:
        if self._forward is not None:
            return
        with self._lock:
            if self._forward is not None:
                return
            model = self._load()  # first: it may import TensorFlow its own way
            import keras
            import tensorflow as tf

            from facescale.training.model import embedding_model

            size = int(model.inputs[0].shape[1])
            embed = embedding_model(model)
            both = keras.Model(model.inputs, [model.outputs[0], embed.outputs[0]], name="serving")
            # One trace for any batch size (a request has any number of faces).
            signature = [tf.TensorSpec([None, size, size, 3], tf.float32)]
            self.image_size = size
            self._forward = tf.function(lambda x: both(x, training=False), input_signature=signature)
            self._start_batcher()


class Recognizer:
    """One registered model with what serving it needs.

    Args:
        load_model: returns the Keras model of ``model.keras`` (image -> probabilities);
            called once, on the first use of the ``model`` backend.
        labels: label -> ``{"name": ..., "slug": ...}`` (``labels.json``).
        crop: the dataset version's crop parameters.
        model_id: the registered model's id.
        version_id: the dataset version it was trained on.
        calibration: thresholds, enrolled embeddings and the default backend
            (`facescale.serving.calibration.Calibration`).
    """

    def __init__(
        self,
        load_model: Callable[[], Any],
        labels: dict[int, dict[str, str]],
        crop: CropParams,
        *,
        model_id: str,
        version_id: str,
        calibration: Any = None,
    ) -> None:
        self.model_id = model_id
        self.version_id = version_id
        self.labels = labels
        # Labels are stable across versions, so a version's may have gaps: scores have a column per label.
        self.classes = max(labels, default=-1) + 1
        # The dataset's own detection settings: a face gets the box and crop curation gave it, and
        # faces smaller than curation accepted (which the model never trained on) are not reported.
        self.crop_params = crop
        self.faces = FaceFinder(crop)
        self._network = _Network(load_model)
        self._dlib = DlibEmbedder(crop)
        self.calibration = calibration
        self._by_slug = {v["slug"]: k for k, v in labels.items()}
        self._by_name = {v["name"].casefold(): k for k, v in labels.items()}

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        crop: CropParams,
        *,
        model_id: str,
        calibration: Any = None,
        before_load: Callable[[], None] | None = None,
    ) -> Recognizer:
        """A recognizer on a local model directory (``labels.json`` now, ``model.keras`` on first use;
        ``before_load`` runs first then, e.g. to import TensorFlow the caller's way)."""
        model_dir = Path(model_dir)
        doc = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
        labels = {int(k): {"name": v["name"], "slug": v["slug"]} for k, v in doc["labels"].items()}

        def load() -> Any:
            if before_load is not None:
                before_load()
            from facescale.training.predict import load_model

            return load_model(model_dir)

        return cls(load, labels, crop, model_id=model_id, version_id=doc["version_id"], calibration=calibration)

    @property
    def image_size(self) -> int:
        """The model's input side (loads the model)."""
        return self._network.size()

    def warm(self) -> None:
        """Load both backends now (a server does, so that no request waits for a load)."""
        self._network.size()
        self._dlib.ready()

    # -- identities ----------------------------------------------------------------------------
    def label_of(self, identity: str) -> int:
        """The label of an identity given by name (any case) or slug."""
        label = self._by_slug.get(identity, self._by_name.get(identity.casefold()))
        if label is None:
            raise ImageRejected(
                "unknown_identity", f"model {self.model_id} does not know {identity!r}", status=404
            )
        return label

    # -- faces (see FaceFinder) -----------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Box]:
        return self.faces.detect(image)

    def single_face(self, image: np.ndarray, name: str = "image") -> Box:
        return self.faces.single_face(image, name)

    def crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        return self.faces.crop(image, box)

    # -- backends ------------------------------------------------------------------------------
    @property
    def default_backend(self) -> Backend:
        """The backend that answers when none is asked for: the calibration's choice, else ``model``."""
        return self.calibration.default_backend if self.calibration is not None else "model"

    def backend(self, asked: str | None = None) -> Backend:
        """``asked``, checked, or the default backend."""
        if asked is None:
            return self.default_backend
        if asked not in BACKENDS:
            raise ConfigError(f"unknown backend {asked!r}: use one of {', '.join(BACKENDS)}")
        return asked

    def predict(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Our model's probabilities ``(n, classes)`` and unit embeddings ``(n, dim)`` of BGR face crops."""
        if not crops:
            return np.zeros((0, self.classes), np.float32), np.zeros((0, 0), np.float32)
        size = self._network.size()
        return self._network(np.stack([self._model_input(c, size) for c in crops]))

    def batch_requests(self, max_batch: int) -> None:
        """From now on run the model on the faces of concurrent callers together (see `batching`)."""
        self._network.batch_requests(max_batch)

    @staticmethod
    def _model_input(crop: np.ndarray, size: int) -> np.ndarray:
        # As training reads a sample: RGB, bilinear resize to the input side, [-1, 1].
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        resized = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
        return np.clip(resized.astype(np.float32) / 127.5 - 1.0, -1.0, 1.0)

    def embed(self, crops: Sequence[np.ndarray], backend: Backend = "model") -> np.ndarray:
        """Unit embeddings ``(n, dim)`` of BGR face crops; NaN rows where dlib finds no face."""
        if backend == "model":
            return self.predict(crops)[1]
        if backend == "dlib":
            return self._dlib.embed(crops)
        raise ConfigError(f"unknown embedding backend {backend!r}: use one of {', '.join(BACKENDS)}")

    # -- identify ------------------------------------------------------------------------------
    def identify(self, image: np.ndarray, top_k: int = 3, backend: str | None = None) -> list[FaceMatch]:
        """Every face of a BGR image with its top-k identities; below the backend's threshold it is unknown."""
        chosen = self.backend(backend)
        boxes = self.detect(image)
        scores = self.identity_scores([self.crop(image, b) for b in boxes], chosen)
        threshold = self.unknown_threshold(chosen)
        matches = []
        for box, row in zip(boxes, scores, strict=True):
            order = np.argsort(-row)[: max(1, top_k)]
            candidates = [
                Candidate(self.labels[int(i)]["name"], self.labels[int(i)]["slug"], int(i), float(row[i]))
                for i in order
                if int(i) in self.labels and np.isfinite(row[i])
            ]
            if not candidates:  # dlib found no usable face in the crop
                matches.append(FaceMatch(box, [], None, 0.0, chosen, threshold))
                continue
            best = candidates[0]
            known = best.confidence >= threshold
            matches.append(FaceMatch(box, candidates, best.identity if known else None, best.confidence, chosen,
                                     threshold))
        return matches

    def identity_scores(self, crops: Sequence[np.ndarray], backend: Backend) -> np.ndarray:
        """Per face crop, a score for every label ``(n, classes)``: the ``model`` backend's softmax, or
        the ``dlib`` backend's similarity to each identity's nearest enrolled photo (-inf: none enrolled)."""
        if backend == "model":
            return self.predict(crops)[0]
        gallery = self._calibrated().galleries.get(backend)
        if gallery is None:
            raise ConfigError(
                f"model {self.model_id} has no {backend} gallery: run `facescale calibrate {self.model_id}`"
            )
        return gallery.identity_scores(self.embed(crops, backend), self.classes)

    def unknown_threshold(self, backend: str | None = None) -> float:
        """The score under which a face is "unknown" for a backend (calibrated; 0.5 for an uncalibrated model)."""
        chosen = self.backend(backend)
        if self.calibration is None:
            return 0.5
        return self.calibration.unknown_for(chosen)

    # -- verify --------------------------------------------------------------------------------
    def verify_pair(self, a: np.ndarray, b: np.ndarray, backend: str | None = None) -> dict[str, Any]:
        """Are the faces of two BGR photos (one face each) the same person?"""
        chosen = self.backend(backend)
        crops = [self.crop(a, self.single_face(a, "first image")), self.crop(b, self.single_face(b, "second image"))]
        vectors = self.embed(crops, chosen)
        if not np.all(np.isfinite(vectors)):
            raise ImageRejected("no_embedding", f"the {chosen} backend found no usable face in one of the images", 422)
        similarity = float(np.dot(vectors[0], vectors[1]))
        threshold = self.threshold(chosen, "pair")
        return {"same": similarity >= threshold, "similarity": similarity, "threshold": threshold, "backend": chosen}

    def verify_identity(self, image: np.ndarray, identity: str, backend: str | None = None) -> dict[str, Any]:
        """Is the face of a BGR photo (one face) the enrolled identity?

        Compares it with the identity's template: the normalised mean embedding of its
        enrolled photos (the training split's original photos, see `calibration`).
        """
        chosen = self.backend(backend)
        label = self.label_of(identity)
        template = self.template(label, chosen)
        vector = self.embed([self.crop(image, self.single_face(image))], chosen)[0]
        if not np.all(np.isfinite(vector)):
            raise ImageRejected("no_embedding", f"the {chosen} backend found no usable face in the image", 422)
        similarity = float(np.dot(vector, template))
        threshold = self.threshold(chosen, "identity")
        return {
            "same": similarity >= threshold,
            "similarity": similarity,
            "threshold": threshold,
            "backend": chosen,
            "identity": self.labels[label]["name"],
            "enrolled_photos": self.calibration.enrolled(label, chosen),
        }

    def threshold(self, backend: Backend, kind: Literal["pair", "identity"]) -> float:
        return self._calibrated().threshold(backend, kind)

    def template(self, label: int, backend: Backend) -> np.ndarray:
        template = self._calibrated().template(label, backend)
        if template is None:
            raise ImageRejected(
                "not_enrolled", f"{self.labels[label]['name']} has no enrolled photos for the {backend} backend", 404
            )
        return template

    def _calibrated(self) -> Any:
        if self.calibration is None:
            raise ConfigError(f"model {self.model_id} is not calibrated: run `facescale calibrate {self.model_id}`")
        return self.calibration


def _area(box: Box) -> int:
    return box[2] * box[3]

