"""Face embeddings: dlib's 5-point aligner + ResNet face descriptor (128-d, Euclidean, cut-off 0.6).

The model is the one docs/ARCHITECTURE.md and DESIGN.md settle on: ``dlib-bin`` (prebuilt
dlib) + ``face-recognition-models`` (CC0 weights shipped in the wheel, nothing downloaded at
run time). For a face box, the 5-point shape predictor finds eyes and nose, dlib aligns a
150x150 chip from them, and ``face_recognition_model_v1`` maps it to a 128-d vector in
which photos of one person lie closer than about 0.6 (Euclidean) and different people farther.

Our curated crops are square face crops with a margin around the detector's box, so with
``box=None`` the embedder takes the centred inner square without that margin as the face
box (``crop_margin``, the fraction of the side cut off on each side). The default
(``DEFAULT_CROP_MARGIN`` = 0.1) was chosen by measuring same/different-person separation on
lfw-dev crops (``bench/bench_cleaning.py --sweep-margins``): margins 0.05-0.2 score alike,
the whole crop as the box (0) is worse. Images are RGB ``uint8``.

One descriptor costs about 66-72 ms of one core on this machine with ``dlib-bin`` (its own
matrix code) and 11-12 ms with dlib compiled against OpenBLAS (``FACESCALE_DLIB=openblas make
setup``; the same embeddings to 1e-7), whatever the input size: the network always sees a
150x150 aligned chip, so a small crop is no cheaper than a full photo. Batched calls gain
nothing on a CPU (bench/bench_prepare_steps.py). One thread per worker process (OpenBLAS is
held to one); scale out with more Ray workers, not threads in one.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EMBEDDING_DIM = 128
#: Distance under which dlib's model calls two faces the same person (its LFW cut-off).
SAME_PERSON_DISTANCE = 0.6
#: Fraction of a crop's side taken as margin on each side when no box is given (measured).
DEFAULT_CROP_MARGIN = 0.1
#: Images (or boxes) smaller than this many pixels on a side give no embedding.
MIN_FACE_SIDE = 20

INSTALL_HINT = (
    "face embeddings need dlib and its model files: pip install dlib-bin face-recognition-models "
    "(prebuilt wheels; nothing is downloaded at run time)"
)

Box = tuple[int, int, int, int]


class FaceEmbedder:
    """Turns a face (an RGB image and a box in it) into a 128-d float32 embedding.

    Set-up loads the shape predictor and the recognition network once (about 0.3 s and
    100 MB of memory); keep one instance per worker. Also a Ray Data batch transform:
    ``ds.map_batches(FaceEmbedder, fn_constructor_kwargs={...}, batch_format="numpy")``.

    Args:
        crop_margin: when ``box`` is None, the fraction of the image side on each side that
            is margin around the face (0 = the whole image is the face box).
        image_column: batch column with encoded image bytes (JPEG, PNG...).
        box_column: optional batch column with a face box per row (``(x, y, w, h)`` or a
            mapping with those keys); without it each image is a face crop.
        output_column: batch column the embeddings are written to, as an ``(n, 128)``
            float32 array; rows that gave no embedding are NaN.
        num_jitters: dlib's test-time augmentation (1 = none; k costs about k times more).
    """

    def __init__(
        self,
        crop_margin: float = DEFAULT_CROP_MARGIN,
        *,
        image_column: str = "image",
        box_column: str | None = None,
        output_column: str = "embedding",
        num_jitters: int = 1,
    ) -> None:
        if not 0.0 <= crop_margin < 0.5:
            raise ValueError(f"crop_margin must be in [0, 0.5), got {crop_margin}")
        if num_jitters < 1:
            raise ValueError(f"num_jitters must be >= 1, got {num_jitters}")
        # A dlib compiled against OpenBLAS (scripts/setup.sh, FACESCALE_DLIB=openblas) would start a
        # thread per core in every worker; one process per core is how curation scales.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        try:
            import dlib
            import face_recognition_models
        except ImportError as exc:  # optional heavy dependency: say how to get it
            raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
        self.crop_margin = crop_margin
        self.image_column = image_column
        self.box_column = box_column
        self.output_column = output_column
        self.num_jitters = num_jitters
        self._dlib = dlib
        self._shape_predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        self._recognizer = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
        log.debug("face embedder ready (dlib %s, crop_margin=%s)", dlib.__version__, crop_margin)

    # -- one face ----------------------------------------------------------------------------
    def embed(self, image: np.ndarray, box: Box | None = None) -> np.ndarray | None:
        """The embedding of the face in ``box`` (x, y, w, h) of an RGB ``uint8`` image.

        Args:
            image: ``(H, W, 3)`` RGB (not BGR: convert OpenCV images first) or ``(H, W)`` grey.
            box: the face box in pixels; None means ``image`` is a face crop and its centred
                square without ``crop_margin`` is the box.

        Returns:
            A ``(128,)`` float32 vector, or None when there is no usable face: an empty or
            tiny image or box, or a box overlapping the image by less than ``MIN_FACE_SIDE`` px.
        """
        found = self._landmarks(image, box)
        return None if found is None else self._descriptor(*found)

    def embed_and_align(
        self, image: np.ndarray, box: Box | None = None, *, size: int = 128, padding: float = 0.25
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """`embed` and `align` from one landmark pass: (embedding, aligned chip), both None without a usable face."""
        found = self._landmarks(image, box)
        if found is None:
            return None, None
        return self._descriptor(*found), self._chip(*found, size, padding)

    def _descriptor(self, rgb: np.ndarray, shape: Any) -> np.ndarray | None:
        vector = self._recognizer.compute_face_descriptor(rgb, shape, self.num_jitters)
        out = np.asarray(vector, dtype=np.float32)
        if out.shape != (EMBEDDING_DIM,) or not np.all(np.isfinite(out)):
            return None
        return out

    def align(
        self, image: np.ndarray, box: Box | None = None, *, size: int = 128, padding: float = 0.25
    ) -> np.ndarray | None:
        """The face in ``box`` of an RGB image as an aligned chip: its five landmarks (eye corners, nose)
        mapped by a similarity transform onto dlib's canonical face (``dlib.get_face_chip``).

        Args:
            image: ``(H, W, 3)`` RGB ``uint8``.
            box: the face box; None means ``image`` is a face crop (see `embed`).
            size: side of the chip in pixels.
            padding: margin around the canonical face, as a fraction of its side on each side
                (0.25 frames the face as a curation crop with margin 0.25 does).

        Returns:
            A ``(size, size, 3)`` RGB ``uint8`` chip, or None when there is no usable face.
        """
        found = self._landmarks(image, box)
        return None if found is None else self._chip(*found, size, padding)

    def _chip(self, rgb: np.ndarray, shape: Any, size: int, padding: float) -> np.ndarray:
        return np.asarray(self._dlib.get_face_chip(rgb, shape, size=size, padding=padding), np.uint8)

    def _landmarks(self, image: np.ndarray, box: Box | None) -> tuple[np.ndarray, Any] | None:
        """The RGB image and dlib's five landmarks of the face in ``box`` (None: the crop's box, see `embed`);
        None when there is no usable face."""
        rgb = _as_rgb(image)
        if rgb is None:
            return None
        height, width = rgb.shape[:2]
        checked = _check_box(self.crop_box(width, height) if box is None else box, width, height)
        if checked is None:
            return None
        x, y, w, h = checked
        return rgb, self._shape_predictor(rgb, self._dlib.rectangle(x, y, x + w - 1, y + h - 1))

    def crop_box(self, width: int, height: int) -> Box:
        """The face box assumed inside a face crop of this size (centred square, margin cut off)."""
        side = min(width, height)
        inner = max(1, round(side * (1.0 - 2.0 * self.crop_margin)))
        return ((width - inner) // 2, (height - inner) // 2, inner, inner)

    def embed_bytes(self, data: bytes, box: Box | None = None) -> np.ndarray | None:
        """``embed`` for an encoded image (JPEG, PNG, ...); None when it does not decode."""
        image = decode_rgb(data)
        return None if image is None else self.embed(image, box)

    # -- Ray Data batch transform ------------------------------------------------------------
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add ``output_column`` (``(n, 128)`` float32, NaN rows = no embedding) to a numpy batch."""
        images = batch[self.image_column]
        boxes: Sequence[Any] | np.ndarray | None = None if self.box_column is None else batch[self.box_column]
        out = np.full((len(images), EMBEDDING_DIM), np.nan, dtype=np.float32)
        failed = 0
        for i, data in enumerate(images):
            vector = None
            if data is not None:
                box = None if boxes is None else _parse_box(boxes[i])
                if boxes is None or box is not None:
                    vector = self.embed_bytes(bytes(data), box)
            if vector is None:
                failed += 1
            else:
                out[i] = vector
        if failed:
            log.info("no embedding for %d of %d images in batch", failed, len(images))
        result = dict(batch)
        result[self.output_column] = out
        return result


def decode_rgb(data: bytes) -> np.ndarray | None:
    """Decode image bytes to RGB ``uint8`` (H, W, 3); None when they are not a decodable image."""
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        return None
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def embedding_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` (n, d) and ``b`` (m, d): an (n, m) array."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    sq = np.sum(a64 * a64, axis=1)[:, None] + np.sum(b64 * b64, axis=1)[None, :] - 2.0 * a64 @ b64.T
    return np.sqrt(np.maximum(sq, 0.0))


def _as_rgb(image: np.ndarray) -> np.ndarray | None:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {arr.dtype}")
    if min(arr.shape[:2]) < MIN_FACE_SIDE:
        return None
    return np.ascontiguousarray(arr)


def _check_box(box: Sequence[int | float], width: int, height: int) -> Box | None:
    """``box`` rounded to pixels, or None when it overlaps the image by too little to hold a face.

    A box reaching past the border is kept as it is (not clipped): the aligner pads, and
    clipping would squash the square box the shape predictor expects.
    """
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None
    left, top, right, bottom = round(x), round(y), round(x + w), round(y + h)
    if min(right, width) - max(left, 0) < MIN_FACE_SIDE or min(bottom, height) - max(top, 0) < MIN_FACE_SIDE:
        return None
    return (left, top, right - left, bottom - top)


def _parse_box(value: Any) -> Box | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        try:
            return (int(value["x"]), int(value["y"]), int(value["w"]), int(value["h"]))
        except (KeyError, TypeError, ValueError):
            return None
    try:
        x, y, w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (x, y, w, h)
