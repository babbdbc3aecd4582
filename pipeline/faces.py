"""Face detection and cropping with OpenCV Haar cascades: encoded photo in, square face crop + quality metrics out.

How a photo becomes a crop (`crop_face`):

1. Decode with ``cv2.imdecode`` (EXIF orientation applied); failure -> ``undecodable``.
2. Detect (`detect_faces`): *propose* on a small image, *decide* at full resolution.

   - Propose: the grey image is downscaled (INTER_AREA) so that its longer side is at most
     ``detect_max_side``, but never so far that a face of the minimum accepted size
     (``max(min_face_px, min_face_fraction * short side)``) spans fewer than
     ``proposal_min_windows`` (1.15) of the proposing cascade's windows.
     ``proposal_cascade`` (frontalface_alt2: 20 px window, cheaper, and on the small image
     it misses fewer faces than the default cascade) runs once with no neighbour threshold;
     its raw hits are clustered (OpenCV's similarity rule, every cluster kept) into
     candidates.
   - Decide: candidates that overlap are merged into one region; ``cascade`` (frontalface
     default) scans each region of the FULL-resolution grey image (candidate +-35 %, faces
     0.6-1.5x its size) and keeps boxes with ``min_neighbors`` hits. OpenCV scans pyramid
     levels of scale <= 2 at a 2-pixel stride, so a region is downscaled only until its
     smallest searched face is two windows (48 px) wide: every face is scanned as densely
     as a full-resolution scan would, but only where a face can be. A candidate at least
     two proposal windows wide (so already scanned at stride 1) with 20 or more raw hits
     needs no second look: it is accepted as is (true faces filling a 250 px photo have a
     median of 36 hits; of 807 clusters away from a true face in 2000 demo images, one
     reached 20, in a photo that may well show a second person).
   - Overlapping boxes are one face: the one with more hits wins (the cascade often adds a
     box shifted onto the hair; two real faces never overlap that much).

   Measured on 1400 demo scenes + 800 lfw-dev photos, one thread, against a full-image
   ``detectMultiScale(1.1, 5, minSize=30)``: the same recall (1378 vs 1377 faces found in
   scenes, 795 vs 795 in photos; 11 faces only we find, 10 only it finds), fewer false
   faces (0.11 vs 0.14 per scene), 2.7x faster on scenes and 3.6x on 250 px photos
   (bench/bench_crop.py).

3. Policy: no face -> one retry on a border-padded copy (an input that is already a tight
   face crop leaves the cascade no context; LFW's funneled photos are fairly tight), looking
   only for faces at least half the image's short side, then one more proposal pass on a
   finer image (the minimum face at ``retry_min_windows``, 2.0, windows: small faces the
   coarse pass missed) -> otherwise ``no_face``. Faces below
   the minimum size are ignored; if that leaves none -> ``face_too_small``. Several faces ->
   the largest is kept only when its area is at least ``dominance`` times the next one's,
   else ``multiple_faces``.
4. Crop a square of side ``max(w, h) * (1 + 2 * margin)`` centred on the face from the
   full-resolution image, replicating the edge pixels where it runs past the border, and
   resize to ``crop_size``. Replicate, not black: a black band is a hard artificial edge.
   Measured on lfw-dev crops padded that way (40 % of the area), black multiplied the
   variance of the Laplacian by 1.6 (blurry crops would pass the blur gate), the mean grey
   by 0.4 (good crops would fail as underexposed) and the contrast by 1.2, and it would
   teach the classifier an artefact marking faces found at an image border; replicate gave
   0.5, 1.04 and 0.9 (errs towards rejecting, not passing).
5. Quality metrics on the grey crop (variance of the Laplacian, mean, standard deviation)
   and gates in this order: ``underexposed``, ``overexposed``, ``low_contrast``, ``blurry``
   (exposure first: a dark crop is also flat and smooth, and the first reason is the one
   that explains it). Accepted crops are JPEG-encoded.

Bad input never raises: every outcome is a `CropResult` whose ``error`` is None or a code
from `REASONS`. `FaceCropper` is the Ray Data transform over a batch of encoded images.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from facescale.errors import ConfigError
from facescale.storage.schemas import FACE_BOX

from .reasons import CROP_REASONS, MEANING, Reason

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x, y, w, h in pixels

DEFAULT_CASCADE = "haarcascade_frontalface_default.xml"
DEFAULT_PROPOSAL_CASCADE = "haarcascade_frontalface_alt2.xml"

REASONS: dict[str, str] = {r: MEANING[r] for r in CROP_REASONS}  # the crop gates' codes and meanings

# Detection internals (measured on lfw-dev scenes with bench/bench_crop.py; not worth a knob).
_GROUP_EPS = 0.2  # similarity for clustering raw proposal hits (cv2.groupRectangles' default)
_DENSE_WINDOWS = 2.0  # OpenCV scans pyramid levels of scale > 2 at stride 1: faces this many windows wide
_VERIFY_PAD = 0.35  # a decision region extends its candidate by this fraction of the side, each way
_VERIFY_SIZES = (0.6, 1.5)  # a decision region looks for faces of these multiples of the candidate's side
_OVERLAP_IOU = 0.3  # boxes overlapping more than this (or holding the other's centre) are one face
_STRONG_HITS = 20  # a big proposal (>= two windows) with this many raw hits is accepted as is
_TIGHT_MIN_FACE = 0.5  # the tight-crop retry only looks for faces at least this fraction of the short side


@dataclass(frozen=True)
class CropParams:
    """Detection, cropping and quality-gate settings (defaults measured on lfw-dev, see docs).

    Sizes are in full-resolution pixels of the source image unless said otherwise.
    """

    detect_max_side: int = 100  # proposal image's longer side (kept larger where minimum faces need it)
    # The smallest accepted face spans this many proposal windows in the downscaled image
    # (1.0 -> 1.15 on the demo scenes: recall 0.983 -> 0.985, wrong crops 6 -> 3, ~9 % slower;
    # 1.5: 0.990 but ~25 % slower).
    proposal_min_windows: float = 1.15
    # When nothing is found, look once more with a finer proposal image (this many windows;
    # 0 = no retry): only photos that would be rejected as no_face pay for it (demo scenes:
    # recall 0.985 -> 0.990, right crops 555 -> 558, wrong ones 3 -> 3).
    retry_min_windows: float = 2.0
    scale_factor: float = 1.1  # pyramid step of the deciding cascade (full resolution)
    coarse_scale_factor: float = 1.15  # pyramid step of the proposal pass (1.2: +15 % speed, -0.1 pt recall)
    min_neighbors: int = 3  # hits the deciding cascade needs for a face (scanned at full density)
    min_face_px: int = 48  # smallest accepted face side
    min_face_fraction: float = 0.05  # smallest accepted face side as a fraction of the image's short side
    dominance: float = 2.5  # keep the largest of several faces only if its area is >= this x the next one's
    margin: float = 0.25  # fraction of the face side added on each side of the crop
    crop_size: int = 128  # side of the stored crop (>= the training input)
    jpeg_quality: int = 95
    min_sharpness: float = 30.0  # variance of the Laplacian of the grey crop
    min_brightness: float = 40.0  # mean grey level, 0-255
    max_brightness: float = 215.0
    min_contrast: float = 20.0  # standard deviation of the grey levels
    tight_pad: float = 0.5  # border added on each side (fraction of the longer side) for the tight-crop retry
    cascade: str = DEFAULT_CASCADE  # the deciding cascade: a file in cv2.data.haarcascades, or a path
    proposal_cascade: str = DEFAULT_PROPOSAL_CASCADE  # proposes candidates on the downscaled image

    def __post_init__(self) -> None:
        problems = []
        if self.detect_max_side < 24:
            problems.append("detect_max_side must be >= 24 (the cascade window)")
        if self.retry_min_windows and self.retry_min_windows <= self.proposal_min_windows:
            problems.append("retry_min_windows must be 0 (off) or larger than proposal_min_windows")
        if self.proposal_min_windows < 1.0:
            problems.append("proposal_min_windows must be >= 1 (a smaller face would not fit the window)")
        if not (self.scale_factor > 1.0 and self.coarse_scale_factor > 1.0):
            problems.append("scale_factor and coarse_scale_factor must be > 1")
        if self.min_neighbors < 1:
            problems.append("min_neighbors must be >= 1")
        if self.min_face_px < 1:
            problems.append("min_face_px must be >= 1")
        if not 0.0 <= self.min_face_fraction < 1.0:
            problems.append("min_face_fraction must be in [0, 1)")
        if self.dominance < 1.0:
            problems.append("dominance must be >= 1")
        if not 0.0 <= self.margin <= 2.0:
            problems.append("margin must be in [0, 2]")
        if not 16 <= self.crop_size <= 4096:
            problems.append("crop_size must be in [16, 4096]")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append("jpeg_quality must be in [1, 100]")
        if not 0.0 <= self.min_brightness <= self.max_brightness <= 255.0:
            problems.append("need 0 <= min_brightness <= max_brightness <= 255")
        if self.min_sharpness < 0 or self.min_contrast < 0:
            problems.append("min_sharpness and min_contrast must be >= 0")
        if not 0.0 <= self.tight_pad <= 2.0:
            problems.append("tight_pad must be in [0, 2]")
        if problems:
            raise ConfigError("invalid crop parameters: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """The parameters as plain values (for a dataset manifest's config)."""
        return asdict(self)


@dataclass(frozen=True)
class CropResult:
    """The outcome for one image: a crop (error is None) or a reason code from `REASONS`.

    ``face_box`` is the chosen face in the decoded source image (clipped to it); it is also
    set when a face was found but rejected (too small, or a quality gate), and None for
    ``undecodable``, ``no_face`` and ``multiple_faces``. The metrics are set whenever a crop
    was made, so rejected crops show by how much they missed a gate. ``faces`` counts the
    distinct faces detected (any size).
    """

    error: str | None
    image: bytes | None = None
    face_box: Box | None = None
    width: int | None = None
    height: int | None = None
    sharpness: float | None = None
    brightness: float | None = None
    contrast: float | None = None
    faces: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Face:
    """A detected face: its box (full-resolution pixels, may reach past the image) and cascade hits."""

    box: Box
    neighbors: int

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


# -- cascade loading ---------------------------------------------------------------------


def load_cascade(name: str = DEFAULT_CASCADE) -> cv2.CascadeClassifier:
    """Load a Haar cascade by file name in ``cv2.data.haarcascades``, or by path."""
    path = Path(name)
    if not path.is_file():
        path = Path(cv2.data.haarcascades) / name  # type: ignore[attr-defined]  # cv2's stubs lack cv2.data
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise ConfigError(f"cannot load the Haar cascade {name!r} (looked at {path})")
    return cascade


_local = threading.local()  # a CascadeClassifier is not safe to share between threads


def _default_cascade(name: str) -> cv2.CascadeClassifier:
    cache: dict[str, cv2.CascadeClassifier] = _local.__dict__.setdefault("cascades", {})
    if name not in cache:
        cache[name] = load_cascade(name)
    return cache[name]


# -- detection ---------------------------------------------------------------------------


def min_face_side(params: CropParams, width: int, height: int) -> int:
    """The smallest accepted face side for an image of this size, in pixels."""
    return max(params.min_face_px, math.ceil(params.min_face_fraction * min(width, height)))


def detection_scale(params: CropParams, width: int, height: int, window: int = 20) -> float:
    """The proposal image's scale: longer side <= detect_max_side, unless minimum faces would shrink below
    ``proposal_min_windows`` windows."""
    fit = params.detect_max_side / max(width, height)
    keep_min_face = params.proposal_min_windows * window / min_face_side(params, width, height)
    return min(1.0, max(fit, keep_min_face))


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _round(box: tuple[float, float, float, float]) -> Box:
    x, y, w, h = box
    return round(x), round(y), round(w), round(h)


def _window(cascade: cv2.CascadeClassifier) -> int:
    w, h = cascade.getOriginalWindowSize()
    return max(w, h)


def detect_faces(
    grey: np.ndarray,
    params: CropParams,
    cascade: cv2.CascadeClassifier,
    proposer: cv2.CascadeClassifier | None = None,
) -> list[Face]:
    """Distinct faces in a full-resolution grey image, largest first: propose on a small copy, decide at full size.

    ``proposer`` scans the downscaled image for candidates (by default
    ``params.proposal_cascade``, loaded once per thread); ``cascade`` decides on the
    full-resolution regions around them (see the module doc).
    """
    if proposer is None:
        proposer = _default_cascade(params.proposal_cascade)
    height, width = grey.shape
    window = _window(proposer)
    scale = detection_scale(params, width, height, window)
    small = _resize(grey, scale)
    if min(small.shape) < window:
        return []
    raw = proposer.detectMultiScale(small, scaleFactor=params.coarse_scale_factor, minNeighbors=0)
    if len(raw) == 0:
        return []
    faces: list[Face] = []
    candidates: list[tuple[float, float, float, float]] = []
    for (x, y, w, h), hits in _cluster(np.asarray(raw, np.float64)):
        box = (x / scale, y / scale, w / scale, h / scale)
        if w >= _DENSE_WINDOWS * window and hits >= _STRONG_HITS:
            faces.append(Face(_round(box), hits))  # scanned at stride 1 and hit that often: a face
        else:
            candidates.append(box)
    # A candidate centred in a face already accepted is part of it (faces do not overlap).
    candidates = [c for c in candidates if not any(_contains_centre(f.box, _round(c)) for f in faces)]
    for region in _regions(candidates, width, height):
        faces.extend(_verify(grey, region, params, cascade))
    return _distinct(faces)


@dataclass(frozen=True)
class _Region:
    """Where and at which sizes the deciding cascade looks: a window of the full-resolution image."""

    x0: int
    y0: int
    x1: int
    y1: int
    min_side: float
    max_side: float


def _regions(candidates: list[tuple[float, float, float, float]], width: int, height: int) -> list[_Region]:
    """One decision region per group of overlapping candidates (a face draws several)."""
    lo, hi = _VERIFY_SIZES
    regions: list[list[float]] = []  # x0, y0, x1, y1, min side, max side
    for x, y, w, h in sorted(candidates, key=lambda c: (-c[2], c[0], c[1], c[3])):
        pad = _VERIFY_PAD * w
        box = [x - pad, y - pad, x + w + pad, y + h + pad, w * lo, w * hi]
        cx, cy = x + w / 2, y + h / 2
        for region in regions:
            if region[0] <= cx <= region[2] and region[1] <= cy <= region[3]:
                region[0], region[1] = min(region[0], box[0]), min(region[1], box[1])
                region[2], region[3] = max(region[2], box[2]), max(region[3], box[3])
                region[4], region[5] = min(region[4], box[4]), max(region[5], box[5])
                break
        else:
            regions.append(box)
    return [
        _Region(max(0, int(r[0])), max(0, int(r[1])), min(width, int(r[2]) + 1), min(height, int(r[3]) + 1), r[4], r[5])
        for r in regions
    ]


def _verify(grey: np.ndarray, region: _Region, params: CropParams, cascade: cv2.CascadeClassifier) -> list[Face]:
    """Run the deciding cascade at full scan density on one region of the full-resolution image."""
    window = _window(cascade)
    # Faces of min_side or more are scanned at stride 1 as long as min_side is at least two
    # windows: shrink the region that far, no further.
    scale = min(1.0, _DENSE_WINDOWS * window / max(region.min_side, 1.0))
    roi = _resize(grey[region.y0 : region.y1, region.x0 : region.x1], scale)
    if min(roi.shape) < window:
        return []
    found, counts = cascade.detectMultiScale2(
        roi,
        scaleFactor=params.scale_factor,
        minNeighbors=params.min_neighbors,
        minSize=(max(window, int(region.min_side * scale)),) * 2,
        maxSize=(int(region.max_side * scale) + 1,) * 2,
    )
    if len(found) == 0:
        return []
    return [
        Face(
            (round(fx / scale) + region.x0, round(fy / scale) + region.y0, round(fw / scale), round(fh / scale)),
            int(n),
        )
        for (fx, fy, fw, fh), n in zip(found, counts, strict=True)
    ]


def _cluster(rects: np.ndarray) -> list[tuple[tuple[float, float, float, float], int]]:
    """Group raw cascade hits like cv2.groupRectangles (same similarity rule), keeping every cluster.

    OpenCV's grouping also drops a cluster lying inside a larger one with more hits, which
    on the small image throws away faces next to a hair-and-forehead box; here every
    cluster stays a candidate and the deciding cascade rules on it.
    """
    # OpenCV returns hits in an order that depends on its thread timing; sort them so the
    # cluster means (float sums) and everything after are the same on every run.
    rects = rects[np.lexsort(rects.T[::-1])]
    x, y, w, h = rects.T
    delta = _GROUP_EPS * (np.minimum.outer(w, w) + np.minimum.outer(h, h)) * 0.5
    similar = (
        (np.abs(np.subtract.outer(x, x)) <= delta)
        & (np.abs(np.subtract.outer(y, y)) <= delta)
        & (np.abs(np.subtract.outer(x + w, x + w)) <= delta)
        & (np.abs(np.subtract.outer(y + h, y + h)) <= delta)
    )
    labels = np.full(len(rects), -1)
    for seed in range(len(rects)):
        if labels[seed] >= 0:
            continue
        labels[seed] = seed
        stack = [seed]
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(similar[i] & (labels < 0)):
                labels[j] = seed
                stack.append(int(j))
    clusters = []
    for label in np.unique(labels):
        members = rects[labels == label]
        mx, my, mw, mh = members.mean(axis=0)
        clusters.append(((float(mx), float(my), float(mw), float(mh)), len(members)))
    return clusters


def find_faces(
    grey: np.ndarray,
    params: CropParams,
    cascade: cv2.CascadeClassifier,
    proposer: cv2.CascadeClassifier | None = None,
) -> list[Face]:
    """`detect_faces`, then the tight-crop retry when it finds nothing: every face `crop_face` considers."""
    found = detect_faces(grey, params, cascade, proposer) or _detect_tight(grey, params, cascade)
    if not found and params.retry_min_windows:
        finer = replace(params, proposal_min_windows=params.retry_min_windows, retry_min_windows=0.0)
        found = detect_faces(grey, finer, cascade, proposer)
    return found


def faces_in_image(image: np.ndarray, params: CropParams) -> list[Face]:
    """Every distinct face `find_faces` sees in a BGR (or grey) image, largest first, however small.

    Uses the thread's own cascades (``params.cascade`` and ``params.proposal_cascade``):
    safe to call from many threads at once.
    """
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return find_faces(grey, params, _default_cascade(params.cascade), _default_cascade(params.proposal_cascade))


def _detect_tight(grey: np.ndarray, params: CropParams, cascade: cv2.CascadeClassifier) -> list[Face]:
    """The retry for inputs that are already tight face crops: pad the border, look for big faces."""
    height, width = grey.shape
    window = _window(cascade)
    min_face = _TIGHT_MIN_FACE * min(width, height)
    scale = min(1.0, _DENSE_WINDOWS * window / max(min_face, 1.0))  # big faces only: a small, dense scan
    small = _resize(grey, scale)
    pad = round(params.tight_pad * max(small.shape))
    if pad == 0:
        return []
    padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    side = max(window, int(min_face * scale))
    found, counts = cascade.detectMultiScale2(
        padded, scaleFactor=params.scale_factor, minNeighbors=params.min_neighbors, minSize=(side, side)
    )
    if len(found) == 0:
        return []
    faces = [
        Face(
            (round((fx - pad) / scale), round((fy - pad) / scale), round(fw / scale), round(fh / scale)),
            int(n),
        )
        for (fx, fy, fw, fh), n in zip(found, counts, strict=True)
    ]
    # A box must still cover part of the real image.
    faces = [f for f in faces if clip_box(f.box, width, height) is not None]
    return _distinct(faces)


def _iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


def _contains_centre(outer: Box, inner: Box) -> bool:
    cx, cy = inner[0] + inner[2] / 2, inner[1] + inner[3] / 2
    return outer[0] <= cx <= outer[0] + outer[2] and outer[1] <= cy <= outer[1] + outer[3]


def _distinct(faces: list[Face]) -> list[Face]:
    """One box per face: the most-hit of overlapping boxes wins; returned largest first."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: (-f.neighbors, -f.area, f.box)):
        if all(
            _iou(face.box, k.box) < _OVERLAP_IOU
            and not _contains_centre(k.box, face.box)
            and not _contains_centre(face.box, k.box)
            for k in kept
        ):
            kept.append(face)
    return sorted(kept, key=lambda f: (-f.area, -f.neighbors, f.box))


def clip_box(box: Box, width: int, height: int) -> Box | None:
    """The part of a box inside a ``width`` x ``height`` image, or None when none is."""
    x, y, w, h = box
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


# -- cropping and quality ------------------------------------------------------------------


def crop_square(image: np.ndarray, box: Box, margin: float, size: int) -> np.ndarray:
    """A ``size`` x ``size`` crop centred on ``box`` with ``margin``; edge pixels replicated past the border."""
    height, width = image.shape[:2]
    x, y, w, h = box
    side = max(1, round(max(w, h) * (1 + 2 * margin)))
    x0 = round(x + w / 2 - side / 2)
    y0 = round(y + h / 2 - side / 2)
    x1, y1 = x0 + side, y0 + side
    ix0, iy0, ix1, iy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    patch = image[iy0:iy1, ix0:ix1]
    if (ix0, iy0, ix1, iy1) != (x0, y0, x1, y1):
        patch = cv2.copyMakeBorder(patch, iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1, cv2.BORDER_REPLICATE)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interpolation)


def quality(crop: np.ndarray) -> tuple[float, float, float]:
    """(sharpness, brightness, contrast) of a BGR or grey crop: Laplacian variance, grey mean, grey std."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    mean, std = cv2.meanStdDev(grey)
    return sharpness, float(mean[0, 0]), float(std[0, 0])


def _gate(params: CropParams, sharpness: float, brightness: float, contrast: float) -> str | None:
    if brightness < params.min_brightness:
        return Reason.UNDEREXPOSED
    if brightness > params.max_brightness:
        return Reason.OVEREXPOSED
    if contrast < params.min_contrast:
        return Reason.LOW_CONTRAST
    if sharpness < params.min_sharpness:
        return Reason.BLURRY
    return None


def decode(data: bytes | None) -> np.ndarray | None:
    """BGR pixels of an encoded image, or None when it does not decode."""
    if not data:
        return None
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except (cv2.error, MemoryError, TypeError, ValueError):
        return None
    if image is None or image.size == 0:
        return None
    return image


def crop_face(
    data: bytes | None,
    params: CropParams,
    cascade: cv2.CascadeClassifier | None = None,
    *,
    proposer: cv2.CascadeClassifier | None = None,
) -> CropResult:
    """Find the face in an encoded image and return its crop, or a reason code. Never raises for bad input.

    Args:
        data: the encoded image (any format OpenCV decodes).
        params: detection, crop and gate settings.
        cascade: the deciding cascade (`load_cascade`); by default ``params.cascade``,
            loaded once per thread.
        proposer: the proposal cascade; by default ``params.proposal_cascade``, ditto.

    Returns:
        A `CropResult`: JPEG bytes of a ``crop_size`` square crop and its metrics, or the
        reason it was rejected.
    """
    image = decode(data)
    if image is None:
        return CropResult(Reason.UNDECODABLE)
    if cascade is None:
        cascade = _default_cascade(params.cascade)
    height, width = image.shape[:2]
    faces = find_faces(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), params, cascade, proposer)
    if not faces:
        return CropResult(Reason.NO_FACE)
    count = len(faces)
    min_side = min_face_side(params, width, height)
    big = [f for f in faces if min(f.box[2], f.box[3]) >= min_side]
    if not big:
        return CropResult(Reason.FACE_TOO_SMALL, face_box=clip_box(faces[0].box, width, height), faces=count)
    if len(big) > 1 and big[0].area < params.dominance * big[1].area:
        return CropResult(Reason.MULTIPLE_FACES, faces=count)
    face = big[0]
    crop = crop_square(image, face.box, params.margin, params.crop_size)
    sharpness, brightness, contrast = quality(crop)
    common: dict[str, Any] = {
        "face_box": clip_box(face.box, width, height),
        "sharpness": sharpness,
        "brightness": brightness,
        "contrast": contrast,
        "faces": count,
    }
    reason = _gate(params, sharpness, brightness, contrast)
    if reason is not None:
        return CropResult(reason, **common)
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, params.jpeg_quality])
    if not ok:  # pragma: no cover - encoding a valid uint8 BGR array does not fail
        raise RuntimeError("cv2.imencode failed on a valid crop")
    return CropResult(None, encoded.tobytes(), width=params.crop_size, height=params.crop_size, **common)


# -- Ray Data transform ------------------------------------------------------------------

#: The columns `FaceCropper` adds, with their exact Arrow types (``batch_format="pyarrow"``).
OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("crop", pa.binary(), metadata={"doc": "JPEG face crop, crop_size square; null when rejected"}),
        pa.field("crop_error", pa.string(), metadata={"doc": "null when accepted, else a code from REASONS"}),
        pa.field("face_box", FACE_BOX, metadata={"doc": "face in the source image (x, y, w, h); null if none"}),
        pa.field("sharpness", pa.float32(), metadata={"doc": "variance of the Laplacian of the grey crop"}),
        pa.field("brightness", pa.float32(), metadata={"doc": "mean grey level of the crop, 0-255"}),
        pa.field("contrast", pa.float32(), metadata={"doc": "standard deviation of the crop's grey levels"}),
        pa.field("faces", pa.int32(), nullable=False, metadata={"doc": "distinct faces detected"}),
    ]
)


class FaceCropper:
    """Ray Data transform: ``image`` (encoded bytes) in, the `OUTPUT_SCHEMA` columns added.

    Use it as ``ds.map_batches(FaceCropper, fn_constructor_args=(params,), concurrency=N)``.
    The cascades are loaded once per actor; OpenCV is kept single-threaded so Ray's actors
    are the only parallelism, and its per-image decode errors are kept out of the logs.

    Both of Ray's batch formats work and come back in the same format:

    - ``batch_format="pyarrow"`` (recommended): the columns are appended with the exact
      types of `OUTPUT_SCHEMA`: nulls where there is no value, ``face_box`` a
      ``struct<x, y, w, h: int32>`` like CURATED_SCHEMA's.
    - ``"numpy"`` (Ray's default): ``crop`` and ``crop_error`` are object arrays holding
      None where there is no value, ``face_box`` an object array of ``{"x", "y", "w", "h"}``
      dicts or None, the metrics float32 with NaN where not measured, ``faces`` int32.
      Ray infers Arrow types from these per batch, so a batch where every row lacks a value
      gets a null-typed column; Ray unifies them when blocks are combined, and the CURATED
      writer casts to its schema, but prefer "pyarrow" where exact types matter.
    """

    def __init__(self, params: CropParams) -> None:
        cv2.setNumThreads(1)
        # Undecodable images are reported as values (crop_error); OpenCV would also log an
        # ERROR line for each one into the worker's log.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
        self.params = params
        self.cascade = load_cascade(params.cascade)
        self.proposer = load_cascade(params.proposal_cascade)
        log.debug("FaceCropper ready: %s", params)

    def crop_all(self, images: Any) -> list[CropResult]:
        """Crop each encoded image of a sequence (bytes or None)."""
        return [crop_face(_as_bytes(data), self.params, self.cascade, proposer=self.proposer) for data in images]

    def __call__(self, batch: dict[str, np.ndarray] | pa.Table) -> dict[str, np.ndarray] | pa.Table:
        if isinstance(batch, pa.Table):
            results = self.crop_all(batch.column("image").to_pylist())
            columns = _arrow_columns(results)
            for field in OUTPUT_SCHEMA:
                if field.name in batch.column_names:
                    batch = batch.drop_columns([field.name])
                batch = batch.append_column(field, columns[field.name])
            return batch
        results = self.crop_all(batch["image"])
        out = dict(batch)
        out.update(_numpy_columns(results))
        return out


def _as_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        return value.tobytes()
    return None


def _box_dict(box: Box | None) -> dict[str, int] | None:
    return None if box is None else dict(zip("xywh", box, strict=True))


def _arrow_columns(results: list[CropResult]) -> dict[str, pa.Array]:
    types = {f.name: f.type for f in OUTPUT_SCHEMA}
    return {
        "crop": pa.array([r.image for r in results], types["crop"]),
        "crop_error": pa.array([r.error for r in results], types["crop_error"]),
        "face_box": pa.array([_box_dict(r.face_box) for r in results], types["face_box"]),
        "sharpness": pa.array([r.sharpness for r in results], types["sharpness"]),
        "brightness": pa.array([r.brightness for r in results], types["brightness"]),
        "contrast": pa.array([r.contrast for r in results], types["contrast"]),
        "faces": pa.array([r.faces for r in results], types["faces"]),
    }


def _numpy_columns(results: list[CropResult]) -> dict[str, np.ndarray]:
    def objects(values: list[Any]) -> np.ndarray:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array

    def floats(values: list[float | None]) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float32)

    return {
        "crop": objects([r.image for r in results]),
        "crop_error": objects([r.error for r in results]),
        "face_box": objects([_box_dict(r.face_box) for r in results]),
        "sharpness": floats([r.sharpness for r in results]),
        "brightness": floats([r.brightness for r in results]),
        "contrast": floats([r.contrast for r in results]),
        "faces": np.array([r.faces for r in results], dtype=np.int32),
    }


__all__ = [
    "DEFAULT_CASCADE",
    "DEFAULT_PROPOSAL_CASCADE",
    "OUTPUT_SCHEMA",
    "REASONS",
    "CropParams",
    "CropResult",
    "Face",
    "FaceCropper",
    "crop_face",
    "crop_square",
    "decode",
    "detect_faces",
    "detection_scale",
    "find_faces",
    "load_cascade",
    "min_face_side",
    "quality",
]
