"""Where the face is in each photo of the demo web's folder: the ground truth its scenes and `truth()` build on.

Three sources, first match wins, per photo:

1. a boxes file beside the photos, ``<photos>/faces.csv`` with the header
   ``path,x,y,w,h`` (``path`` relative to the folder, e.g. ``Ada_Lovelace/ada_01.jpg``; an
   empty ``x`` says the photo holds no usable single face);
2. a photo framed as LFW's are (250 x 250, one face centred): the box measured on lfw-dev
   (`scenes.face_box`), at no cost;
3. any other photo: dlib's HOG face detector, independent of the pipeline's Haar cascade,
   once per photo (cached): one face found -> its box; none, or several of which none is
   twice the area of the next -> unknown.

A photo whose box is unknown is still served; the truth says so (``known: false``), and a
benchmark leaves it out instead of counting it wrong.
"""

from __future__ import annotations

import csv
import threading
from pathlib import Path
from typing import Any

import numpy as np

from . import scenes

BOXES_FILE = "faces.csv"
LFW_FRAME = (scenes.LFW_SIZE, scenes.LFW_SIZE)
DOMINANCE = 2.0  # a face this many times the area of the next one is the photo's face


class FaceTruth:
    """The face box of every photo of a folder (None: unknown), from the boxes file, LFW framing or HOG."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._boxes: dict[str, scenes.Box | None] = _read_boxes(root / BOXES_FILE)
        self._detected: dict[str, scenes.Box | None] = {}
        self._lock = threading.Lock()
        self._detector: Any = None  # dlib.fhog_object_detector, made on first use

    def box(self, relpath: str, size: tuple[int, int]) -> scenes.Box | None:
        """The face box of the photo at ``relpath`` (its ``size``: width, height), None when it is unknown."""
        if relpath in self._boxes:
            return self._boxes[relpath]
        if size == LFW_FRAME:
            return scenes.face_box(size)
        with self._lock:
            if relpath not in self._detected:
                self._detected[relpath] = self._detect(self.root / relpath)
            return self._detected[relpath]

    def _detect(self, path: Path) -> scenes.Box | None:
        import dlib
        from PIL import Image

        if self._detector is None:
            self._detector = dlib.get_frontal_face_detector()
        with Image.open(path) as img:
            grey = np.asarray(img.convert("L"))
        found = sorted(self._detector(grey, 1), key=lambda r: r.width() * r.height(), reverse=True)
        if not found or (len(found) > 1 and found[0].width() * found[0].height()
                         < DOMINANCE * found[1].width() * found[1].height()):
            return None
        r = found[0]
        left, top = max(0, r.left()), max(0, r.top())
        return left, top, min(grey.shape[1], r.right()) - left, min(grey.shape[0], r.bottom()) - top


def _read_boxes(path: Path) -> dict[str, scenes.Box | None]:
    if not path.is_file():
        return {}
    boxes: dict[str, scenes.Box | None] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("x"):
                boxes[row["path"]] = (int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"]))
            else:
                boxes[row["path"]] = None
    return boxes
