"""Decide whether a blob of bytes is a usable image: sniff, size guard, full decode.

Content-Type headers and file extensions are never trusted: the format is sniffed from
the bytes, the pixel count is checked from the header *before* decoding (decompression
bombs), and the whole image is decoded so truncated or corrupt files are caught here.
Failures are returned as reason codes, never raised.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# Our own pixel guard (max_pixels, checked from the header before decoding) replaces
# Pillow's warning. It is silenced once, at import: `warnings.catch_warnings()` per call is
# not thread-safe, and the downloader calls check_image from several threads at once.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

ACCEPTED_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}


@dataclass(frozen=True)
class ImageCheck:
    """The verdict on one image: accepted (error is None) or a reason code."""

    error: str | None
    content_type: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def check_image(data: bytes, *, max_pixels: int = 40_000_000, min_side: int = 48) -> ImageCheck:
    """Sniff and fully decode ``data``.

    Reason codes: ``empty``, ``not_an_image``, ``unsupported_format``, ``too_many_pixels``,
    ``too_small``, ``corrupt``.
    """
    if not data:
        return ImageCheck("empty")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        return ImageCheck("not_an_image")
    except Image.DecompressionBombError:
        return ImageCheck("too_many_pixels")
    except (OSError, SyntaxError, ValueError):
        return ImageCheck("corrupt")
    content_type = ACCEPTED_FORMATS.get(img.format or "")
    width, height = img.size
    if content_type is None:
        return ImageCheck("unsupported_format", Image.MIME.get(img.format or ""), width, height)
    if width * height > max_pixels:
        return ImageCheck("too_many_pixels", content_type, width, height)
    if min(width, height) < min_side:
        return ImageCheck("too_small", content_type, width, height)
    try:
        img.load()  # full decode: truncated or corrupt data fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return ImageCheck("corrupt", content_type, width, height)
    return ImageCheck(None, content_type, width, height)
