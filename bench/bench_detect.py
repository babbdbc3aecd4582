"""The serving path's second detector pass: how often dlib's HOG detector finds a face the Haar pass missed,
and how its box maps onto the Haar box curation crops around.

On lfw-dev photos (one face near the centre, LFW's framing): the serving `FaceFinder` with
its Haar pass alone vs Haar then HOG (`second_pass_faces`) where Haar found nothing; the
photos with a face and the seconds each pass spent. ``--fit`` also measures, on photos where
both detectors find exactly one face, the HOG box -> Haar box relation (side ratio, shift
in HOG sides): its medians are `serving.recognizer.HOG_SCALE` and `HOG_SHIFT_Y`, and the
IoU of the mapped HOG box with the Haar box says how well one stands in for the other.

    .venv/bin/python bench/bench_detect.py [--photos 1500] [--fit]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from facescale.pipeline.faces import CropParams
from facescale.serving.recognizer import FaceFinder, hog_to_haar, second_pass_faces

Box = tuple[int, int, int, int]


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--images", type=Path, default=Path(os.environ.get("FACESCALE_TEST_DATA", "../shared/data/lfw-dev"))
    )
    parser.add_argument("--photos", type=int, default=1500, help="lfw-dev photos sampled (seeded)")
    parser.add_argument("--fit", action="store_true", help="measure the HOG -> Haar box relation")
    args = parser.parse_args()
    paths = sorted(args.images.glob("*/*.jpg"))
    paths = sorted(random.Random(0).sample(paths, min(args.photos, len(paths))))
    finder = FaceFinder(CropParams())
    images = [cv2.imread(str(p)) for p in paths]

    start = time.perf_counter()
    haar = [finder.detect(image, second_pass=False) for image in images]
    haar_s = time.perf_counter() - start
    missed = [i for i, boxes in enumerate(haar) if not boxes]
    start = time.perf_counter()
    recovered = [i for i in missed if finder.detect(images[i])]
    second_s = time.perf_counter() - start
    n, found = len(images), len(images) - len(missed)
    print(f"{n} lfw-dev photos: the Haar pass finds a face in {found} ({found / n:.4f}), {haar_s:.1f} s")
    print(f"the second pass (HOG) on the {len(missed)} it missed finds {len(recovered)} "
          f"({1000 * second_s / max(1, len(missed)):.0f} ms a photo): {[paths[i].name for i in recovered][:8]}")
    print(f"with both: {(found + len(recovered)) / n:.4f} of photos have a face "
          f"({(found + len(recovered)) / max(1, found):.4f}x the Haar pass alone)")
    if not args.fit:
        return
    scales, shifts_y, shifts_x, overlaps = [], [], [], []
    for image, boxes in zip(images, haar, strict=True):
        hog = second_pass_faces(image, mapped=False)
        if len(boxes) != 1 or len(hog) != 1:
            continue
        (hx, hy, hw, hh), (x, y, w, h) = boxes[0], hog[0]
        side = max(w, h)
        scales.append(max(hw, hh) / side)
        shifts_y.append(((hy + hh / 2) - (y + h / 2)) / side)
        shifts_x.append(((hx + hw / 2) - (x + w / 2)) / side)
        overlaps.append(iou(boxes[0], hog_to_haar((x, y, w, h))))
    print(f"fit on {len(scales)} photos with one face in both: side ratio Haar/HOG median "
          f"{statistics.median(scales):.3f} (IQR {np.percentile(scales, 25):.3f}-{np.percentile(scales, 75):.3f}), "
          f"centre shift down {statistics.median(shifts_y):+.3f}, right {statistics.median(shifts_x):+.3f} HOG sides")
    print(f"IoU of the mapped HOG box with the Haar box: median {statistics.median(overlaps):.3f}, "
          f"10th percentile {np.percentile(overlaps, 10):.3f}")


if __name__ == "__main__":
    main()
