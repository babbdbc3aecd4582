"""check_image: sniffing, the pixel guard before decoding, full decode, reason codes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from facescale.scraper.imagecheck import check_image


def _encode(fmt: str, size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buf, format=fmt)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def real_jpeg(lfw_dev: Path) -> bytes:
    return next((lfw_dev / "Aaron_Sorkin").glob("*.jpg")).read_bytes()


def test_real_photo_is_accepted(real_jpeg: bytes) -> None:
    check = check_image(real_jpeg)
    assert check.ok and check.content_type == "image/jpeg" and (check.width, check.height) == (250, 250)


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("WEBP", "image/webp"), ("BMP", "image/bmp")])
def test_other_formats_are_sniffed(fmt: str, mime: str) -> None:
    assert check_image(_encode(fmt)).content_type == mime


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"<html><body>not an image</body></html>", "not_an_image"),
        (_encode("TIFF"), "unsupported_format"),
        (_encode("PNG", (20, 20)), "too_small"),
        (_png_header_only(20000, 20000), "too_many_pixels"),
        (_png_header_only(200, 200), "corrupt"),
    ],
    ids=["empty", "html", "tiff", "tiny", "bomb", "no-pixel-data"],
)
def test_rejections_have_reason_codes(data: bytes, reason: str) -> None:
    assert check_image(data).error == reason


def test_truncated_jpeg_is_corrupt(real_jpeg: bytes) -> None:
    check = check_image(real_jpeg[: len(real_jpeg) // 2])
    assert check.error == "corrupt"
    assert (check.width, check.height) == (250, 250)  # the header was readable


def test_limits_are_parameters(real_jpeg: bytes) -> None:
    assert check_image(real_jpeg, max_pixels=250 * 250 - 1).error == "too_many_pixels"
    assert check_image(real_jpeg, min_side=251).error == "too_small"
