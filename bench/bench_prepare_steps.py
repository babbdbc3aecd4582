"""Where curation's per-photo time goes (`CropPreparer`), and dlib's batched descriptor call against one at a time.

Builds RAW-like photos from lfw-dev and the demo web's renderer (``--photos`` untouched
250x250 photos and as many faces placed in 640x480-800x600 scenes, the two kinds the crop
stage sees most), then in this process, one core, OpenCV single-threaded like a Ray actor:

- the whole `CropPreparer` over them in batches of 16 (what a curation actor runs);
- its steps alone: crop (decode, Haar detect, crop, gates, JPEG encode of the crop), the
  crop decoded again, the perceptual keys, the dlib 5-point shape, the dlib descriptor;
- the descriptor over the same faces as one batched call per ``--batch`` faces
  (``compute_face_descriptor(images, shapes)``) against one call per face, with the largest
  difference between the two embeddings (they must agree).

Each timing is the best of ``--repeat`` rounds. Printed: milliseconds per photo per step,
the share of the whole, and the batched / single descriptor speed ratio.

Run:  .venv/bin/python bench/bench_prepare_steps.py [--photos 100] [--batch 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from facescale.config import CurationSettings
from facescale.demoweb import scenes
from facescale.pipeline.curate import crop_params
from facescale.pipeline.dedup import image_keys
from facescale.pipeline.embeddings import FaceEmbedder, decode_rgb
from facescale.pipeline.faces import FaceCropper
from facescale.pipeline.prepare import CropPreparer


def photos(root: Path, count: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    files = sorted(root.glob("*/*.jpg"))
    chosen = rng.sample(files, min(count, len(files)))
    out = [f.read_bytes() for f in chosen]
    for f in chosen:  # the same faces placed in scenes
        out.append(scenes.render_scene(f.read_bytes(), rng.getrandbits(32)))
    return out


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=100, help="lfw-dev photos (as many scenes are added)")
    parser.add_argument("--folder", type=Path, default=Path("../shared/data/lfw-dev"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    params = crop_params(CurationSettings())
    images = photos(args.folder, args.photos)
    n = len(images)
    preparer = CropPreparer(params)
    cropper = FaceCropper(params)
    embedder = FaceEmbedder()
    table = pa.table({
        "image_id": [str(i) for i in range(n)], "run_id": ["r"] * n, "identity": ["x"] * n,
        "identity_slug": ["x"] * n, "image": images, "error": pa.nulls(n, pa.string()),
    })
    preparer(table.slice(0, 4))  # warm-up

    def whole() -> None:
        for start in range(0, n, 16):
            preparer(table.slice(start, 16))

    results = cropper.crop_all(images)
    crops = [r.image for r in results if r.ok and r.image is not None]
    rgbs = [decode_rgb(c) for c in crops]
    faces = [rgb for rgb in rgbs if rgb is not None]
    rects = [embedder._dlib.rectangle(*_corners(embedder.crop_box(f.shape[1], f.shape[0]))) for f in faces]
    shapes = [embedder._shape_predictor(f, r) for f, r in zip(faces, rects, strict=True)]

    def single() -> list[np.ndarray]:
        return [np.asarray(embedder._recognizer.compute_face_descriptor(f, s, 1)) for f, s in zip(faces, shapes,
                                                                                                  strict=True)]

    def batched() -> list[np.ndarray]:
        out: list[np.ndarray] = []
        dlib = embedder._dlib
        for start in range(0, len(faces), args.batch):
            # dlib takes one full_object_detections per image: one face per crop
            per_image = [_one(dlib, s) for s in shapes[start : start + args.batch]]
            vectors = embedder._recognizer.compute_face_descriptor(faces[start : start + args.batch], per_image, 1)
            out += [np.asarray(v[0]) for v in vectors]
        return out

    steps = {
        "CropPreparer (all steps)": (whole, n),
        "crop: decode, detect, crop, gates, encode": (lambda: cropper.crop_all(images), n),
        "crop decoded again": (lambda: [decode_rgb(c) for c in crops], n),
        "perceptual keys": (lambda: [image_keys(Image.fromarray(f)) for f in faces], n),
        "dlib 5-point shape": (
            lambda: [embedder._shape_predictor(f, r) for f, r in zip(faces, rects, strict=True)], n),
        "dlib descriptor, one call per face": (single, n),
        f"dlib descriptor, batches of {args.batch}": (batched, n),
    }
    timings = {name: best(fn, args.repeat) for name, (fn, _) in steps.items()}
    total = timings["CropPreparer (all steps)"]
    print(f"{n} photos ({args.photos} lfw-dev + {n - args.photos} scenes), {len(faces)} crops; best of {args.repeat}")
    print("| step | ms per photo | share of CropPreparer |")
    print("|---|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds / n * 1000:.1f} | {seconds / total:.0%} |")
    a, b = single(), batched()
    drift = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True)) if a else 0.0
    one, many = timings["dlib descriptor, one call per face"], timings[f"dlib descriptor, batches of {args.batch}"]
    print(f"batched descriptor / single: {one / many:.2f}x (largest embedding difference {drift:.2e})")


def _corners(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x, y, w, h = box
    return x, y, x + w - 1, y + h - 1


def _one(dlib: Any, shape: Any) -> Any:
    group = dlib.full_object_detections()
    group.append(shape)
    return group


if __name__ == "__main__":
    main()
