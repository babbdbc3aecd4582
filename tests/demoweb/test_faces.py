"""The demo web's face truth for photos not framed as LFW's: a boxes file, LFW framing, or dlib's HOG detector."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from facescale.demoweb import truth
from facescale.demoweb.faces import BOXES_FILE, FaceTruth
from facescale.demoweb.scenes import LFW_FACE_BOX, LFW_SIZE, map_box


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def _off_centre(lfw_photo: Path, dest: Path, canvas: tuple[int, int], at: tuple[int, int], side: int) -> tuple:
    """An LFW photo scaled to ``side`` and pasted at ``at`` on a wider grey canvas; returns the face's box there."""
    with Image.open(lfw_photo) as img:
        photo = img.convert("RGB").resize((side, side))
    page = Image.new("RGB", canvas, (128, 128, 128))
    page.paste(photo, at)
    buf = io.BytesIO()
    page.save(buf, format="JPEG", quality=92)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(buf.getvalue())
    return map_box(LFW_FACE_BOX, side / LFW_SIZE, *at)


def test_a_face_off_centre_on_a_wider_photo_is_found_where_it_is(lfw_dev: Path, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    pasted = _off_centre(lfw_dev / "Tony_Blair" / "Tony_Blair_0001.jpg", root / "Tony_Blair" / "a.jpg",
                         (640, 420), (380, 90), 220)
    blank = Image.new("RGB", (500, 300), (90, 140, 200))  # no face at all
    blank.save(root / "Tony_Blair" / "b.jpg")
    faces = FaceTruth(root)
    found = faces.box("Tony_Blair/a.jpg", (640, 420))
    assert found is not None and _iou(found, pasted) > 0.4, (found, pasted)
    centred = map_box(LFW_FACE_BOX, 640 / LFW_SIZE, 0, 0)
    assert _iou(centred, pasted) < 0.1  # what the LFW assumption would have claimed
    assert faces.box("Tony_Blair/b.jpg", (500, 300)) is None


def test_a_boxes_file_wins_and_can_say_unknown(lfw_dev: Path, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    photo = root / "Tony_Blair" / "a.jpg"
    _off_centre(lfw_dev / "Tony_Blair" / "Tony_Blair_0001.jpg", photo, (640, 420), (380, 90), 220)
    (root / BOXES_FILE).write_text("path,x,y,w,h\nTony_Blair/a.jpg,1,2,30,40\nTony_Blair/c.jpg,,,,\n")
    faces = FaceTruth(root)
    assert faces.box("Tony_Blair/a.jpg", (640, 420)) == (1, 2, 30, 40)
    assert faces.box("Tony_Blair/c.jpg", (640, 420)) is None


def test_truth_marks_what_it_cannot_locate_and_keeps_lfw_photos_as_they_were(lfw_dev: Path, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "Nobody_Here").mkdir(parents=True)
    for i in range(3):  # wide photos without a face: neither LFW-framed nor anything HOG finds
        Image.new("RGB", (400, 300), (40 * i, 90, 160)).save(root / "Nobody_Here" / f"{i}.jpg")
    rows = truth(root, "Nobody Here", max_results=20)
    photos = [r for r in rows if r["kind"] in ("orig", "scene", "resized")]
    assert photos and all(not r["known"] and r["faces"] == [] for r in photos)
    lfw = [r for r in truth(lfw_dev, "Tony Blair", max_results=20) if r["kind"] == "orig"]
    assert lfw and all(r["known"] and len(r["faces"]) == 1 for r in lfw)
