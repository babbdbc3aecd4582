"""Uploaded photos: checked (size, format, pixel count) before decoding, and annotated with boxes.

Everything a client sends goes through `load_image`: the header is read first (Pillow
reads only the header on ``open``), so a decompression bomb or a 100k x 100k PNG is refused
before a single pixel is allocated; what passes is decoded with OpenCV into BGR ``uint8``.
Refusals are `ImageRejected` with a reason code and a message meant for people; the API maps
them to 4xx responses and the CLI to one ``error:`` line.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from facescale.errors import FacescaleError

#: Formats accepted from clients (what Pillow calls them): the usual photo formats.
FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO"})

Box = tuple[int, int, int, int]


class ImageRejected(FacescaleError):
    """An uploaded image that cannot be used; ``reason`` is a stable code, ``status`` an HTTP status."""

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class ImageLimits:
    """What a client may send."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 32


def load_image(data: bytes, limits: ImageLimits, name: str = "image") -> np.ndarray:
    """Check and decode an uploaded image.

    Args:
        data: the encoded bytes as received.
        limits: the size limits.
        name: how the message refers to the image (a form field or a file name).

    Returns:
        BGR ``uint8`` pixels (``(H, W, 3)``).

    Raises:
        ImageRejected: ``empty``, ``too_large`` (413), ``not_an_image``, ``unsupported_format``,
            ``too_many_pixels`` (413), ``too_small`` or ``undecodable`` (a truncated or corrupt file).
    """
    if not data:
        raise ImageRejected("empty", f"{name}: the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageRejected(
            "too_large", f"{name}: {len(data)} bytes is over the limit of {limits.max_bytes} bytes", 413
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            header = Image.open(io.BytesIO(data))
            width, height = header.size
            fmt = header.format
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise ImageRejected("not_an_image", f"{name}: not an image Pillow or OpenCV can read") from None
        raise ImageRejected("too_many_pixels", f"{name}: too many pixels ({exc})", 413) from None
    except (OSError, ValueError, SyntaxError) as exc:  # a header that parses but lies
        raise ImageRejected("undecodable", f"{name}: unreadable image header ({exc})") from None
    if fmt not in FORMATS:
        raise ImageRejected(
            "unsupported_format", f"{name}: {fmt} images are not accepted (use {', '.join(sorted(FORMATS))})", 415
        )
    if width * height > limits.max_pixels:
        raise ImageRejected(
            "too_many_pixels",
            f"{name}: {width}x{height} is {width * height} pixels, over the limit of {limits.max_pixels}",
            413,
        )
    if min(width, height) < limits.min_side:
        raise ImageRejected("too_small", f"{name}: {width}x{height} is smaller than {limits.min_side} px on a side")
    image = _decode(data)
    if image is None or image.shape[:2] != (height, width):
        raise ImageRejected("undecodable", f"{name}: the {fmt} file is truncated or corrupt")
    return image


def _decode(data: bytes) -> np.ndarray | None:
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is not None:
        return image
    # Formats OpenCV may lack (GIF): decode with Pillow, fully, so truncation shows.
    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil.load()
            rgb = np.asarray(pil.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """BGR pixels -> JPEG bytes."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - a valid uint8 array always encodes
        raise RuntimeError("cv2.imencode failed")
    return encoded.tobytes()


def annotate(image: np.ndarray, labels: list[tuple[Box, str, bool]]) -> np.ndarray:
    """A copy of ``image`` with each box drawn and captioned; ``(box, text, known)``, unknown faces in orange."""
    out = image.copy()
    thickness = max(2, round(max(out.shape[:2]) / 300))
    scale = max(0.5, max(out.shape[:2]) / 900)
    for (x, y, w, h), text, known in labels:
        colour = (60, 200, 60) if known else (0, 140, 255)
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thickness)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = y - th - base - 4 if y - th - base - 4 >= 0 else y + h
        cv2.rectangle(out, (x, top), (x + tw + 4, top + th + base + 4), colour, -1)
        cv2.putText(out, text, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out
