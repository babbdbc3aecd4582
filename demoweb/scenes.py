"""Synthesise the demo web's image variants: scenes, pairs, face-free images, re-encodes, thumbnails, a PNG bomb."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw

Box = tuple[int, int, int, int]  # x, y, w, h in pixels

# Where the face sits in a deep-funneled LFW photo (250x250): the median box OpenCV's
# frontal Haar cascade finds on 300 random lfw-dev photos was (68, 67, 116, 116), with the
# 10th-90th percentiles within +-7 px. Other photo sizes get the same box scaled.
LFW_FACE_BOX: Box = (68, 67, 116, 116)
LFW_SIZE = 250

SCENE_SIZES = ((640, 480), (640, 480), (800, 600), (480, 640))
PAIR_GAP = 16
PAIR_MARGIN = 12
RESIZE_SCALES = (0.6, 0.7, 0.8, 1.25, 1.4)
THUMB_SIDE = 160
NOISE_SIDE = 1024


def face_box(size: tuple[int, int]) -> Box:
    """The face box of an LFW-style centred photo of ``size`` (width, height): right for LFW's own photos
    only; `faces.FaceTruth` decides whose box comes from where."""
    w, h = size
    x, y, bw, bh = LFW_FACE_BOX
    return round(x * w / LFW_SIZE), round(y * h / LFW_SIZE), round(bw * w / LFW_SIZE), round(bh * h / LFW_SIZE)


def map_box(box: Box, scale: float, dx: int, dy: int) -> Box:
    """``box`` scaled by ``scale`` then shifted by (dx, dy)."""
    x, y, w, h = box
    return round(x * scale) + dx, round(y * scale) + dy, round(w * scale), round(h * scale)


@dataclass(frozen=True)
class SceneLayout:
    """Where a photo goes in a scene: canvas size, pasted size and position."""

    canvas: tuple[int, int]
    scale: float
    x: int
    y: int


def scene_layout(variant: int, photo_size: tuple[int, int]) -> SceneLayout:
    """The deterministic geometry of a scene for ``variant`` (cheap: no pixels involved)."""
    rng = np.random.default_rng([variant, 1])
    cw, ch = SCENE_SIZES[int(rng.integers(len(SCENE_SIZES)))]
    side = int(rng.integers(110, 201))  # the pasted photo's longer side: a face of ~50-95 px
    scale = side / max(photo_size)
    pw, ph = round(photo_size[0] * scale), round(photo_size[1] * scale)
    x = int(rng.integers(8, cw - pw - 8))
    y = int(rng.integers(8, ch - ph - 8))
    return SceneLayout((cw, ch), scale, x, y)


@dataclass(frozen=True)
class PairLayout:
    """Two photos side by side: canvas size and the top-left corner of each."""

    canvas: tuple[int, int]
    first: tuple[int, int]
    second: tuple[int, int]


def pair_layout(first_size: tuple[int, int], second_size: tuple[int, int]) -> PairLayout:
    """Two photos next to each other on a plain backdrop, vertically centred."""
    (w1, h1), (w2, h2) = first_size, second_size
    height = max(h1, h2) + 2 * PAIR_MARGIN
    width = w1 + w2 + PAIR_GAP + 2 * PAIR_MARGIN
    return PairLayout(
        (width, height),
        (PAIR_MARGIN, (height - h1) // 2),
        (PAIR_MARGIN + w1 + PAIR_GAP, (height - h2) // 2),
    )


def resize_params(variant: int) -> tuple[float, int]:
    """(scale, JPEG quality) of a near-duplicate re-encode."""
    rng = np.random.default_rng([variant, 2])
    return RESIZE_SCALES[int(rng.integers(len(RESIZE_SCALES)))], int(rng.integers(55, 81))


def truncate_at(variant: int, length: int) -> int:
    """How many bytes of a ``length``-byte file a truncated copy keeps (35-70 %)."""
    rng = np.random.default_rng([variant, 3])
    return max(16, int(length * rng.uniform(0.35, 0.7)))


COPY_ENGINES = ("google", "duckduckgo")
"""The engines whose results are copies of the photos on other sites (index + 1 is the copy style)."""


@dataclass(frozen=True)
class CopyLayout:
    """How another site's copy of an image differs: a border cut off, another size, a watermark, a re-encode.

    ``box`` is the part of the image kept (left, top, right, bottom, in its pixels), ``scale``
    the resize of that part; a face at (x, y, w, h) lands at ``map_box(box, scale, -left*scale,
    -top*scale)`` (`copy_face`).
    """

    box: tuple[int, int, int, int]
    scale: float
    quality: int
    watermark: bool


def copy_layout(style: int, variant: int, size: tuple[int, int]) -> CopyLayout:
    """The copy of an image of ``size`` that engine style ``style`` (1: google, 2: duckduckgo) serves.

    Google's copies are other sizes (0.55-0.85x, a third of them with 1-4% of the borders cut
    off) at JPEG quality 60-85; DuckDuckGo's have 2-7% of the borders cut off (unevenly), half
    are resized (0.7-0.95x), a stock-photo watermark sits in a corner of most, quality 70-90.
    """
    rng = np.random.default_rng([variant, 6, style])
    w, h = size
    if style == 1:
        cut = rng.uniform(0.01, 0.04, 4) if rng.random() < 1 / 3 else np.zeros(4)
        scale = float(rng.uniform(0.55, 0.85))
        quality, watermark = int(rng.integers(60, 86)), False
    elif style == 2:
        cut = rng.uniform(0.02, 0.07, 4)
        scale = float(rng.uniform(0.7, 0.95)) if rng.random() < 0.5 else 1.0
        quality, watermark = int(rng.integers(70, 91)), bool(rng.random() < 0.8)
    else:
        raise ValueError(f"no copy style {style}")
    left, top = round(w * cut[0]), round(h * cut[1])
    right, bottom = w - round(w * cut[2]), h - round(h * cut[3])
    return CopyLayout((left, top, right, bottom), scale, quality, watermark)


def copy_face(box: Box, layout: CopyLayout) -> Box:
    """Where a face box of the image lies in its copy."""
    left, top = layout.box[:2]
    return map_box(box, layout.scale, -round(left * layout.scale), -round(top * layout.scale))


def render_copy(data: bytes, style: int, variant: int) -> bytes:
    """Another site's copy of an encoded image (`copy_layout`)."""
    img = _open_rgb(data)
    layout = copy_layout(style, variant, img.size)
    out = img.crop(layout.box)
    if layout.scale != 1.0:
        out = out.resize((round(out.width * layout.scale), round(out.height * layout.scale)), Image.Resampling.BICUBIC)
    if layout.watermark:
        out = _watermark(out, variant)
    return _encode(out, layout.quality)


def _watermark(img: Image.Image, variant: int) -> Image.Image:
    """A stock site's mark: a translucent band with its name in the bottom-right corner."""
    rng = np.random.default_rng([variant, 7])
    name = ("stockfaces", "pressimages", "photoarchive", "newswire")[int(rng.integers(4))]
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    text = f"(c) {name}.example"
    left, top, right, bottom = draw.textbbox((0, 0), text)
    tw, th = right - left + 8, bottom - top + 6
    x, y = max(0, img.width - tw - 4), max(0, img.height - th - 4)
    draw.rectangle((x, y, x + tw, y + th), fill=(0, 0, 0, 110))
    draw.text((x + 4, y + 3 - top), text, fill=(255, 255, 255, 200))
    return Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")


def _encode(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _open_rgb(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    return img.convert("RGB") if img.mode != "RGB" else img


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from an encoded image's header (no decoding)."""
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def _gradient(size: tuple[int, int], top: np.ndarray, bottom: np.ndarray) -> Image.Image:
    column = np.linspace(top, bottom, size[1]).astype(np.uint8)[:, None, :]  # (h, 1, 3)
    return Image.fromarray(column, "RGB").resize(size, Image.Resampling.NEAREST)


@cache
def _grain() -> Image.Image:
    """A fixed field of sensor-like noise (0..12 per pixel), cropped at random offsets."""
    noise = np.random.default_rng(0).integers(0, 13, (NOISE_SIDE, NOISE_SIDE), dtype=np.uint8)
    return Image.fromarray(noise, "L").convert("RGB")


def _colour(rng: np.random.Generator, low: int, high: int) -> tuple[int, int, int]:
    r, g, b = rng.integers(low, high, 3)
    return int(r), int(g), int(b)


def _landscape(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: np.random.Generator) -> None:
    w, h = size
    horizon = int(h * rng.uniform(0.45, 0.65))
    sun = (int(rng.integers(40, w - 40)), int(rng.integers(20, horizon // 2 + 30)))
    radius = int(rng.integers(15, 35))
    draw.ellipse((sun[0] - radius, sun[1] - radius, sun[0] + radius, sun[1] + radius), fill=(250, 235, 170))
    for layer in range(3):  # hills, far to near
        base = horizon + layer * (h - horizon) // 4
        points = [(0, h)]
        for x in range(0, w + 80, 80):
            points.append((x, base - int(rng.integers(0, 60))))
        points.append((w, h))
        shade = 90 - 20 * layer
        draw.polygon(points, fill=(int(rng.integers(40, 90)), shade + int(rng.integers(40, 80)), 40 + 10 * layer))
    for _ in range(int(rng.integers(3, 9))):  # trees
        x, y = int(rng.integers(0, w)), int(rng.integers(horizon, h - 10))
        trunk = int(rng.integers(4, 9))
        crown = int(rng.integers(14, 32))
        draw.rectangle((x - trunk // 2, y - crown, x + trunk // 2, y), fill=(90, 60, 35))
        draw.ellipse((x - crown, y - 3 * crown, x + crown, y - crown // 2), fill=_colour(rng, 30, 110))


def _city(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: np.random.Generator) -> None:
    w, h = size
    street = int(h * rng.uniform(0.7, 0.85))
    x = -int(rng.integers(0, 40))
    while x < w:
        bw = int(rng.integers(60, 150))
        top = int(rng.integers(h // 10, street - 60))
        grey = int(rng.integers(90, 200))
        draw.rectangle((x, top, x + bw, street), fill=(grey, grey - int(rng.integers(0, 20)), grey - 10))
        lit = _colour(rng, 180, 250)
        for wy in range(top + 10, street - 20, 26):  # rows of windows, not faces
            for wx in range(x + 8, x + bw - 14, 22):
                if rng.random() < 0.8:
                    draw.rectangle((wx, wy, wx + 12, wy + 14), fill=lit if rng.random() < 0.5 else (60, 70, 85))
        x += bw + int(rng.integers(0, 12))
    draw.rectangle((0, street, w, h), fill=(70, 70, 74))
    for lx in range(int(rng.integers(0, 50)), w, 90):
        draw.rectangle((lx, (street + h) // 2 - 2, lx + 45, (street + h) // 2 + 2), fill=(230, 230, 230))


def _interior(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: np.random.Generator) -> None:
    w, h = size
    floor = int(h * rng.uniform(0.65, 0.8))
    wood = _colour(rng, 110, 170)
    for i, y in enumerate(range(floor, h, 14)):
        shade = 12 if i % 2 else 0
        draw.rectangle((0, y, w, y + 13), fill=(wood[0] - shade, wood[1] - shade - 30, max(0, wood[2] - 60)))
    wx, wy = int(rng.integers(20, w // 2)), int(rng.integers(20, floor // 3))
    ww, wh = int(rng.integers(120, w // 2)), int(rng.integers(90, floor // 2))
    draw.rectangle((wx, wy, wx + ww, wy + wh), fill=(175, 205, 235), outline=(245, 245, 245), width=8)
    draw.line((wx + ww // 2, wy, wx + ww // 2, wy + wh), fill=(245, 245, 245), width=6)
    tx = int(rng.integers(0, w - 200))
    draw.rectangle((tx, floor - 70, tx + 200, floor - 55), fill=(95, 60, 40))
    draw.rectangle((tx + 10, floor - 55, tx + 22, floor + 10), fill=(80, 50, 30))
    draw.rectangle((tx + 178, floor - 55, tx + 190, floor + 10), fill=(80, 50, 30))
    draw.polygon(
        [(tx + 70, floor - 70), (tx + 130, floor - 70), (tx + 110, floor - 110), (tx + 90, floor - 110)],
        fill=_colour(rng, 120, 240),
    )


def _abstract(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: np.random.Generator) -> None:
    w, h = size
    for _ in range(int(rng.integers(6, 16))):
        x0, y0 = int(rng.integers(-50, w)), int(rng.integers(-50, h))
        x1, y1 = x0 + int(rng.integers(30, 260)), y0 + int(rng.integers(30, 200))
        shape = int(rng.integers(3))
        colour = _colour(rng, 20, 250)
        if shape == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.ellipse((x0, y0, x1, y1), outline=colour, width=int(rng.integers(3, 12)))
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 10)))


_STYLES = (_landscape, _city, _interior, _abstract)


def background(size: tuple[int, int], rng: np.random.Generator, *, styles: int = 3) -> Image.Image:
    """A plausible face-free picture: landscape, street, room (or, with ``styles=4``, abstract shapes)."""
    img = _gradient(size, rng.integers(90, 235, 3), rng.integers(150, 255, 3))
    _STYLES[int(rng.integers(styles))](ImageDraw.Draw(img), size, rng)
    dx, dy = (int(v) for v in rng.integers(0, NOISE_SIDE - max(size) + 1, 2))
    grain = _grain().crop((dx, dy, dx + size[0], dy + size[1]))
    return ImageChops.add(img, grain, scale=1.0, offset=-6)


def render_scene(photo: bytes, variant: int) -> bytes:
    """``photo`` scaled down and placed small in a larger face-free scene."""
    img = _open_rgb(photo)
    layout = scene_layout(variant, img.size)
    canvas = background(layout.canvas, np.random.default_rng([variant, 4]))
    size = round(img.width * layout.scale), round(img.height * layout.scale)
    canvas.paste(img.resize(size, Image.Resampling.LANCZOS), (layout.x, layout.y))
    return _encode(canvas, 85)


def render_pair(first: bytes, second: bytes) -> bytes:
    """Two photos side by side (two faces in one image)."""
    a, b = _open_rgb(first), _open_rgb(second)
    layout = pair_layout(a.size, b.size)
    canvas = Image.new("RGB", layout.canvas, (236, 236, 232))
    canvas.paste(a, layout.first)
    canvas.paste(b, layout.second)
    return _encode(canvas, 88)


def render_noface(variant: int) -> bytes:
    """A face-free picture (a landscape, street, room or abstract shapes)."""
    rng = np.random.default_rng([variant, 5])
    size = SCENE_SIZES[int(rng.integers(len(SCENE_SIZES)))]
    return _encode(background(size, rng, styles=len(_STYLES)), 85)


def render_resized(photo: bytes, variant: int) -> bytes:
    """A near-duplicate: ``photo`` resized and re-encoded at another JPEG quality."""
    img = _open_rgb(photo)
    scale, quality = resize_params(variant)
    size = round(img.width * scale), round(img.height * scale)
    return _encode(img.resize(size, Image.Resampling.BICUBIC), quality)


def reencode(photo: bytes, quality: int) -> bytes:
    """``photo`` re-encoded at ``quality`` (new bytes, same picture)."""
    return _encode(_open_rgb(photo), quality)


def thumbnail(data: bytes, side: int = THUMB_SIDE) -> bytes:
    """A small JPEG preview whose longer side is at most ``side``."""
    img: Image.Image = Image.open(io.BytesIO(data))
    img.draft("RGB", (side, side))  # let the JPEG decoder downscale by 1/2, 1/4, 1/8
    img = img.convert("RGB")
    img.thumbnail((side, side), Image.Resampling.BICUBIC)
    return _encode(img, 80)


@cache
def placeholder_thumbnail(side: int = THUMB_SIDE) -> bytes:
    """A neutral grey preview for results whose image the site cannot show."""
    img = Image.new("RGB", (side, side), (205, 205, 205))
    draw = ImageDraw.Draw(img)
    draw.rectangle((side // 4, side // 3, 3 * side // 4, 2 * side // 3), outline=(150, 150, 150), width=3)
    draw.line(
        (side // 4, 2 * side // 3, side // 2, side // 2, 3 * side // 4, 2 * side // 3), fill=(150, 150, 150), width=3
    )
    return _encode(img, 80)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@cache
def bomb_png(side: int = 20_000) -> bytes:
    """A valid, white, 1-bit ``side`` x ``side`` PNG streamed through zlib (about 50 KB for 20000 px)."""
    row = b"\x00" + b"\xff" * ((side + 7) // 8)  # filter type 0, then the packed bits
    rows_per_block = 256
    block = row * rows_per_block
    packer = zlib.compressobj(9)
    parts = []
    for start in range(0, side, rows_per_block):
        parts.append(packer.compress(block if start + rows_per_block <= side else row * (side - start)))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )
