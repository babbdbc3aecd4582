"""A registered model, ready to serve: find faces, crop them as the dataset did, identify and embed them.

`Recognizer` holds one registered Inception V3 model (its softmax head for identification,
its L2-normalised embedding for verification), the dataset version's crop parameters (so a
face is cropped exactly as the training crops were: same detector, margin and crop size)
and, when calibrated, the thresholds and enrolled embeddings of `facescale.serving.calibration`.
Two embedding backends are offered for verification: ``model`` (our embedding layer) and
``dlib`` (the pretrained 128-d ResNet of `facescale.pipeline.embeddings`, which needs no
training and so also works for people the model never saw).

`FaceFinder` (detection and cropping as the dataset did) and `DlibEmbedder` need no model:
the LFW benchmark (`facescale.serving.benchmark`) runs the dlib backend with them alone.

Every method is safe to call from several threads at once (the API serves requests from a
thread pool): the cascades are per thread, Keras inference is re-entrant, dlib is locked.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
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

    def detect(self, image: np.ndarray) -> list[Box]:
        """Boxes of every face in a BGR image that curation would accept by size (clipped to it), largest first."""
        height, width = image.shape[:2]
        smallest = min_face_side(self.crop_params, width, height)
        boxes = []
        for face in faces_in_image(image, self.crop_params):
            if min(face.box[2], face.box[3]) < smallest:
                continue
            clipped = clip_box(face.box, width, height)
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
        self._lock = threading.Lock()

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Unit embeddings ``(n, 128)`` of BGR face crops; NaN rows where dlib finds no face."""
        from facescale.pipeline.embeddings import EMBEDDING_DIM, FaceEmbedder

        # The crop holds the face box plus `margin` of its side on each side: give dlib that box.
        inner = 1.0 / (1.0 + 2.0 * self.margin)
        out = np.full((len(crops), EMBEDDING_DIM), np.nan, np.float32)
        with self._lock:
            if self._dlib is None:
                self._dlib = FaceEmbedder()
            for i, crop in enumerate(crops):
                side = crop.shape[0]
                face = round(side * inner)
                offset = (side - face) // 2
                vector = self._dlib.embed(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), (offset, offset, face, face))
                if vector is not None:
                    out[i] = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return out


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
    below the calibrated threshold.
    """

    box: Box
    candidates: list[Candidate]
    identity: str | None
    confidence: float

    def to_json(self) -> dict[str, Any]:
        x, y, w, h = self.box
        return {
            "box": {"x": x, "y": y, "width": w, "height": h},
            "identity": self.identity,
            "unknown": self.identity is None,
            "confidence": round(self.confidence, 6),
            "candidates": [
                {"identity": c.identity, "slug": c.slug, "label": c.label, "confidence": round(c.confidence, 6)}
                for c in self.candidates
            ],
        }


class Recognizer:
    """One loaded model with what serving it needs.

    Args:
        model: the Keras model of ``model.keras`` (image -> probabilities).
        labels: label -> ``{"name": ..., "slug": ...}`` (``labels.json``).
        crop: the dataset version's crop parameters.
        model_id: the registered model's id.
        version_id: the dataset version it was trained on.
        calibration: thresholds and enrolled embeddings (`facescale.serving.calibration.Calibration`).
    """

    def __init__(
        self,
        model: Any,
        labels: dict[int, dict[str, str]],
        crop: CropParams,
        *,
        model_id: str,
        version_id: str,
        calibration: Any = None,
    ) -> None:
        import keras
        import tensorflow as tf

        from facescale.training.model import embedding_model

        self.model_id = model_id
        self.version_id = version_id
        self.labels = labels
        self.image_size = int(model.inputs[0].shape[1])
        # The dataset's own detection settings: a face gets the box and crop curation gave it, and
        # faces smaller than curation accepted (which the model never trained on) are not reported.
        self.crop_params = crop
        self.faces = FaceFinder(crop)
        embed = embedding_model(model)
        both = keras.Model(model.inputs, [model.outputs[0], embed.outputs[0]], name="serving")
        # One trace for any batch size (a request has any number of faces).
        signature = [tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32)]
        self._forward = tf.function(lambda x: both(x, training=False), input_signature=signature)
        self._batcher: Batcher | None = None
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
    ) -> Recognizer:
        """Load ``model.keras`` and ``labels.json`` from a local model directory."""
        from facescale.training.evaluate import load_model

        model_dir = Path(model_dir)
        doc = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
        labels = {int(k): {"name": v["name"], "slug": v["slug"]} for k, v in doc["labels"].items()}
        model = load_model(model_dir)
        return cls(
            model, labels, crop, model_id=model_id, version_id=doc["version_id"], calibration=calibration,
        )

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

    # -- the model -----------------------------------------------------------------------------
    def predict(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``(n, classes)`` and unit embeddings ``(n, dim)`` of BGR face crops."""
        if not crops:
            return np.zeros((0, len(self.labels)), np.float32), np.zeros((0, 0), np.float32)
        batch = np.stack([self._model_input(c) for c in crops])
        if self._batcher is not None:
            probabilities, embeddings = self._batcher(batch)
        else:
            probabilities, embeddings = self._forward(batch)
        return np.asarray(probabilities), np.asarray(embeddings)

    def batch_requests(self, max_batch: int) -> None:
        """From now on run the model on the faces of concurrent callers together (see `batching`)."""
        if max_batch > 1 and self._batcher is None:
            self._batcher = Batcher(lambda x: tuple(np.asarray(t) for t in self._forward(x)), max_batch)

    def _model_input(self, crop: np.ndarray) -> np.ndarray:
        # As training reads a sample: RGB, bilinear resize to the input side, [-1, 1].
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        resized = cv2.resize(rgb, (self.image_size, self.image_size), interpolation=cv2.INTER_LINEAR)
        return np.clip(resized.astype(np.float32) / 127.5 - 1.0, -1.0, 1.0)

    def embed(self, crops: Sequence[np.ndarray], backend: Backend = "model") -> np.ndarray:
        """Unit embeddings ``(n, dim)`` of BGR face crops; NaN rows where dlib finds no face."""
        if backend == "model":
            return self.predict(crops)[1]
        if backend == "dlib":
            return self._dlib.embed(crops)
        raise ConfigError(f"unknown embedding backend {backend!r}: use one of {', '.join(BACKENDS)}")

    # -- identify ------------------------------------------------------------------------------
    def identify(self, image: np.ndarray, top_k: int = 3) -> list[FaceMatch]:
        """Every face of a BGR image with its top-k identities; below the threshold it is unknown."""
        boxes = self.detect(image)
        probabilities, _ = self.predict([self.crop(image, b) for b in boxes])
        threshold = self.unknown_threshold
        matches = []
        for box, row in zip(boxes, probabilities, strict=True):
            order = np.argsort(-row)[: max(1, top_k)]
            candidates = [
                Candidate(self.labels[int(i)]["name"], self.labels[int(i)]["slug"], int(i), float(row[i]))
                for i in order
                if int(i) in self.labels
            ]
            best = candidates[0]
            known = best.confidence >= threshold
            matches.append(FaceMatch(box, candidates, best.identity if known else None, best.confidence))
        return matches

    @property
    def unknown_threshold(self) -> float:
        """Top-1 confidence under which a face is "unknown" (calibrated; 0.5 until calibrated)."""
        return self.calibration.unknown_threshold if self.calibration is not None else 0.5

    # -- verify --------------------------------------------------------------------------------
    def verify_pair(self, a: np.ndarray, b: np.ndarray, backend: Backend = "model") -> dict[str, Any]:
        """Are the faces of two BGR photos (one face each) the same person?"""
        crops = [self.crop(a, self.single_face(a, "first image")), self.crop(b, self.single_face(b, "second image"))]
        vectors = self.embed(crops, backend)
        if not np.all(np.isfinite(vectors)):
            raise ImageRejected("no_embedding", f"the {backend} backend found no usable face in one of the images", 422)
        similarity = float(np.dot(vectors[0], vectors[1]))
        threshold = self.threshold(backend, "pair")
        return {"same": similarity >= threshold, "similarity": similarity, "threshold": threshold, "backend": backend}

    def verify_identity(self, image: np.ndarray, identity: str, backend: Backend = "model") -> dict[str, Any]:
        """Is the face of a BGR photo (one face) the enrolled identity?

        Compares it with the identity's template: the normalised mean embedding of its
        enrolled photos (the training split's original photos, see `calibration`).
        """
        label = self.label_of(identity)
        template = self.template(label, backend)
        vector = self.embed([self.crop(image, self.single_face(image))], backend)[0]
        if not np.all(np.isfinite(vector)):
            raise ImageRejected("no_embedding", f"the {backend} backend found no usable face in the image", 422)
        similarity = float(np.dot(vector, template))
        threshold = self.threshold(backend, "identity")
        return {
            "same": similarity >= threshold,
            "similarity": similarity,
            "threshold": threshold,
            "backend": backend,
            "identity": self.labels[label]["name"],
            "enrolled_photos": self.calibration.enrolled(label, backend),
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

