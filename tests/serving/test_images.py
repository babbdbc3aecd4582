"""Uploaded images: what is refused (and why) before and after decoding, and annotation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facescale.serving.images import ImageLimits, ImageRejected, annotate, encode_jpeg, load_image

LIMITS = ImageLimits(max_bytes=2_000_000, max_pixels=4_000_000, min_side=32)


def _encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _reason(data: bytes, limits: ImageLimits = LIMITS) -> tuple[str, int]:
    with pytest.raises(ImageRejected) as info:
        load_image(data, limits, "upload")
    assert "upload" in str(info.value)
    return info.value.reason, info.value.status


def test_a_photo_decodes_to_bgr(lfw_dev: Path) -> None:
    path = sorted((lfw_dev / "Colin_Powell").glob("*.jpg"))[0]
    pixels = load_image(path.read_bytes(), LIMITS)
    with Image.open(path) as photo:
        rgb = np.asarray(photo.convert("RGB"))
    assert pixels.shape == (250, 250, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels[..., ::-1].astype(int) - rgb).mean() < 2  # BGR of the same picture


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "GIF"])
def test_other_photo_formats_decode(fmt: str) -> None:
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    pixels = load_image(_encoded(image, fmt), LIMITS)
    assert pixels.shape == (48, 64, 3)
    assert pixels[..., 2].mean() > 150  # red, in BGR


def test_empty_and_non_images_are_refused() -> None:
    assert _reason(b"") == ("empty", 400)
    assert _reason(b"%PDF-1.7 not a photo" * 20) == ("not_an_image", 400)
    assert _reason(np.random.default_rng(0).bytes(5000)) == ("not_an_image", 400)


def test_a_truncated_jpeg_is_refused(lfw_dev: Path) -> None:
    data = sorted((lfw_dev / "Tony_Blair").glob("*.jpg"))[0].read_bytes()
    assert _reason(data[: len(data) // 3]) == ("undecodable", 400)


def test_a_file_over_the_byte_limit_is_refused_unread() -> None:
    assert _reason(b"\xff\xd8" + b"\0" * 3000, ImageLimits(max_bytes=2000)) == ("too_large", 413)


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    """A 1-bit 20000 x 20000 PNG is a few kB but 400 M pixels: refused before decoding."""
    bomb = _encoded(Image.new("1", (20_000, 20_000)), "PNG")
    assert len(bomb) < LIMITS.max_bytes
    assert _reason(bomb) == ("too_many_pixels", 413)


def test_huge_dimensions_are_refused() -> None:
    wide = _encoded(Image.new("RGB", (4_100, 1_000)), "PNG")
    assert _reason(wide) == ("too_many_pixels", 413)


def test_tiny_images_and_other_formats_are_refused() -> None:
    assert _reason(_encoded(Image.new("RGB", (20, 200)), "PNG")) == ("too_small", 400)
    assert _reason(_encoded(Image.new("RGB", (64, 64)), "ICO")) == ("unsupported_format", 415)


def test_annotate_draws_boxes_without_touching_the_input() -> None:
    image = np.full((200, 300, 3), 255, np.uint8)
    out = annotate(image, [((50, 60, 80, 80), "Tony Blair 91%", True), ((200, 100, 50, 50), "unknown", False)])
    assert (image == 255).all()
    assert out.shape == image.shape
    assert tuple(out[100, 50]) == (60, 200, 60)  # left edge of the known face's box, green
    assert tuple(out[125, 200]) == (0, 140, 255)  # left edge of the unknown one, orange
    assert (out[110:130, 70:110] == 255).all()  # inside a box: untouched
    again = load_image(encode_jpeg(out), LIMITS)
    assert again.shape == image.shape
