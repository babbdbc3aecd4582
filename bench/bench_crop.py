"""Face cropping: the Ray stage (FaceCropper) vs a seed-style OpenCV loop on the same demo images, in one run.

Builds the demo web's hard case, faces placed small in larger scenes (``scene``, 640x480 to
800x600, faces of about 50-95 px), plus untouched lfw-dev photos (``orig``, 250x250), with
`facescale.demoweb.scenes` (the code the demo web renders with), so every true face box is
known. Then, on the same images:

- seed: one file per image; ``cv2.imread``, grey, ``detectMultiScale`` on the FULL image
  (scaleFactor 1.1, minNeighbors 5, minSize 30x30: the usual tutorial call), every face
  cropped, resized to the crop size and written with ``cv2.imwrite``; OpenCV's default
  threading (it spreads detectMultiScale over the machine's cores);
- ours, plain loop: `crop_face` over the encoded bytes in this process with the same
  threading as the seed: the algorithm alone;
- ours, Ray: ``ray.data.from_items(bytes).map_batches(FaceCropper, ActorPoolStrategy(C))``,
  timed from building the dataset to the last result in the driver, start-up of the actors
  included ("end to end"), and from the first batch out to the last ("steady state", what a
  long nightly run sees); OpenCV single-threaded inside each actor.

Each timing is the best of ``--repeat`` runs after an untimed warm-up on a few images (the
Ray stage: every run starts its own actors, so their start-up is in every run).

Quality, against the true boxes (IoU >= 0.5):

- face recall: the true face is among the boxes the detector reports (the seed: its
  detections; ours: `find_faces`, every face `crop_face` considers), and how many faces
  only one of them found: each finds a few the other misses, so a difference of a few
  faces is noise (the true boxes are themselves approximate: the median Haar box of an
  LFW photo, scaled and shifted);
- right crops: the seed's written crops whose box is the true face / our accepted crops
  whose box is; wrong crops: the other crops written / accepted (label noise);
- our rejection reasons.

Run:  .venv/bin/python bench/bench_crop.py [--scenes 400] [--originals 200] [--concurrency 2]
                                           [--set coarse_scale_factor=1.2 ...]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2

from facescale.demoweb import scenes
from facescale.pipeline.faces import (
    CropParams,
    CropResult,
    FaceCropper,
    crop_face,
    decode,
    find_faces,
    load_cascade,
)

REPO = Path(__file__).resolve().parents[1]
Box = tuple[int, int, int, int]
T = TypeVar("T")
WARM_UP = 20  # images run through each method, untimed, before timing it


@dataclass(frozen=True)
class Sample:
    kind: str
    data: bytes
    truth: Box


def build_samples(photos: Path, n_scenes: int, n_originals: int, seed: int) -> list[Sample]:
    """Scenes and originals from random lfw-dev photos, each with its true face box, shuffled."""
    files = sorted(photos.glob("*/*.jpg"))
    rng = random.Random(seed)
    samples = []
    for path in rng.sample(files, n_originals):
        data = path.read_bytes()
        samples.append(Sample("orig", data, scenes.face_box(scenes.image_size(data))))
    for path in rng.sample(files, n_scenes):
        data = path.read_bytes()
        variant = rng.getrandbits(32)
        size = scenes.image_size(data)
        layout = scenes.scene_layout(variant, size)
        box = scenes.map_box(scenes.face_box(size), layout.scale, layout.x, layout.y)
        samples.append(Sample("scene", scenes.render_scene(data, variant), box))
    rng.shuffle(samples)
    return samples


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def seed_loop(paths: list[Path], out_dir: Path, size: int) -> list[list[Box]]:
    """The seed's way: read a file, detect on the full image, write every face as a file."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = []
    for i, path in enumerate(paths):
        img = cv2.imread(str(path))
        boxes: list[Box] = []
        if img is not None:
            grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            for j, (x, y, w, h) in enumerate(cascade.detectMultiScale(grey, 1.1, 5, minSize=(30, 30))):
                crop = cv2.resize(img[y : y + h, x : x + w], (size, size))
                cv2.imwrite(str(out_dir / f"{i:05d}_{j}.jpg"), crop)
                boxes.append((int(x), int(y), int(w), int(h)))
        found.append(boxes)
    return found


@dataclass(frozen=True)
class RayRun:
    seconds: float  # dataset built -> last result in the driver
    first_batch_s: float  # dataset built -> first batch in the driver (actor start-up + one batch)
    steady_rate: float  # images/s from the first batch to the last
    boxes: list[Box | None]
    errors: list[str | None]


def ray_stage(datas: list[bytes], params: CropParams, concurrency: int, batch_size: int) -> RayRun:
    """Run FaceCropper over the images with Ray Data; results in input order."""
    import ray

    start = time.perf_counter()
    ds = ray.data.from_items([{"key": i, "image": d} for i, d in enumerate(datas)])
    ds = ds.map_batches(
        FaceCropper,
        fn_constructor_args=(params,),
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        batch_size=batch_size,
        batch_format="pyarrow",
    )
    boxes: dict[int, Box | None] = {}
    errors: dict[int, str | None] = {}
    first = first_rows = None
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        if first is None:
            first, first_rows = time.perf_counter(), batch.num_rows
        for key, box, error in zip(
            batch.column("key").to_pylist(),
            batch.column("face_box").to_pylist(),
            batch.column("crop_error").to_pylist(),
            strict=True,
        ):
            boxes[key] = None if box is None else (box["x"], box["y"], box["w"], box["h"])
            errors[key] = error
    end = time.perf_counter()
    assert first is not None and first_rows is not None
    steady = (len(datas) - first_rows) / (end - first) if end > first else float("nan")
    order = range(len(datas))
    return RayRun(end - start, first - start, steady, [boxes[i] for i in order], [errors[i] for i in order])


def timed(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    """Best wall time of ``repeat`` runs, and the last result."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def fractions(samples: list[Sample], hits: list[bool]) -> str:
    cells = []
    for kind in (None, "scene", "orig"):
        chosen = [h for s, h in zip(samples, hits, strict=True) if kind is None or s.kind == kind]
        cells.append(f"{sum(chosen) / len(chosen):.3f}" if chosen else "  -  ")
    return " / ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "lfw-dev")
    parser.add_argument("--scenes", type=int, default=400, help="demo scenes (a face small in a large picture)")
    parser.add_argument("--originals", type=int, default=200, help="untouched lfw-dev photos")
    parser.add_argument("--concurrency", type=int, default=2, help="FaceCropper actors")
    parser.add_argument("--batch-size", type=int, default=64, help="images per FaceCropper call")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per method after a warm-up; best counts")
    parser.add_argument("--seed", type=int, default=0, help="which photos and scenes")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a CropParams field, e.g. --set coarse_scale_factor=1.2 (repeatable)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params = CropParams()
    for item in args.set:
        name, _, value = item.partition("=")
        current = getattr(params, name)  # AttributeError names a wrong field
        params = dataclasses.replace(params, **{name: type(current)(value)})
    samples = build_samples(args.photos, args.scenes, args.originals, args.seed)
    datas = [s.data for s in samples]
    n = len(samples)
    print(
        f"{n} images ({args.scenes} scenes, {args.originals} originals), {os.cpu_count()} CPUs, "
        f"OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads by default), load average "
        + " ".join(f"{v:.1f}" for v in os.getloadavg())
    )

    work = Path(tempfile.mkdtemp(prefix="facescale-bench-crop-"))
    try:
        in_dir, out_dir = work / "in", work / "out"
        in_dir.mkdir()
        paths = []
        for i, data in enumerate(datas):
            paths.append(in_dir / f"{i:05d}.jpg")
            paths[-1].write_bytes(data)

        def run_seed(count: int = n) -> list[list[Box]]:
            shutil.rmtree(out_dir, ignore_errors=True)
            out_dir.mkdir()
            return seed_loop(paths[:count], out_dir, params.crop_size)

        cascade, proposer = load_cascade(params.cascade), load_cascade(params.proposal_cascade)

        def run_loop(count: int = n) -> list[CropResult]:
            return [crop_face(d, params, cascade, proposer=proposer) for d in datas[:count]]

        run_seed(WARM_UP)  # page cache, OpenCV's thread pool, lazy initialisation
        run_loop(WARM_UP)

        t_seed, seed_boxes = timed(run_seed, args.repeat)
        t_loop, results = timed(run_loop, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import ray

    ray.init(
        address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
        logging_level=logging.ERROR,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        ray_stage(datas[:WARM_UP], params, args.concurrency, args.batch_size)  # Ray Data's own lazy start-up
        runs = [ray_stage(datas, params, args.concurrency, args.batch_size) for _ in range(args.repeat)]
    finally:
        ray.shutdown()
    ray_run = min(runs, key=lambda r: r.seconds)
    if ray_run.boxes != [r.face_box for r in results] or ray_run.errors != [r.error for r in results]:
        print("WARNING: the Ray stage and the plain loop disagree on some images")

    # Detection recall of our detector (untimed): every face crop_face considers.
    ours_found = []
    for data in datas:
        image = decode(data)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image is not None else None
        ours_found.append([] if grey is None else [f.box for f in find_faces(grey, params, cascade, proposer)])

    def found(boxes_per_image: list[list[Box]]) -> list[bool]:
        return [any(iou(s.truth, b) >= 0.5 for b in bs) for s, bs in zip(samples, boxes_per_image, strict=True)]

    seed_right = sum(iou(s.truth, b) >= 0.5 for s, bs in zip(samples, seed_boxes, strict=True) for b in bs)
    seed_crops = sum(len(bs) for bs in seed_boxes)
    accepted = [(s, r) for s, r in zip(samples, results, strict=True) if r.ok and r.face_box is not None]
    ours_right = sum(iou(s.truth, r.face_box) >= 0.5 for s, r in accepted if r.face_box is not None)

    steady = max(r.steady_rate for r in runs)
    rows = [
        ("seed loop (imread, detect, imwrite)", n / t_seed, ""),
        ("ours: crop_face, plain loop", n / t_loop, ""),
        (
            f"ours: Ray x{args.concurrency}, end to end",
            n / ray_run.seconds,
            f"first batch after {ray_run.first_batch_s:.1f} s",
        ),
        (f"ours: Ray x{args.concurrency}, steady state", steady, "first batch to last"),
    ]
    print(f"\n{'speed':40s} {'images/s':>9s} {'x seed':>7s}")
    for name, rate, note in rows:
        print(f"{name:40s} {rate:9.1f} {rate * t_seed / n:7.2f}   {note}")
    print(f"\n{'face recall (IoU >= 0.5)':40s} all / scene / orig")
    print(f"{'seed detector (full image)':40s} {fractions(samples, found(seed_boxes))}")
    print(f"{'our detector (find_faces)':40s} {fractions(samples, found(ours_found))}")
    only_seed = sum(a and not b for a, b in zip(found(seed_boxes), found(ours_found), strict=True))
    only_ours = sum(b and not a for a, b in zip(found(seed_boxes), found(ours_found), strict=True))
    print(f"{'faces only one detector found':40s} seed {only_seed}, ours {only_ours}")
    print(f"seed: {seed_crops} crops written, {seed_right} of the true face, {seed_crops - seed_right} wrong")
    print(f"ours: {len(accepted)} crops accepted, {ours_right} of the true face, {len(accepted) - ours_right} wrong")
    reasons = collections.Counter(r.error or "accepted" for r in results)
    print("ours, outcomes: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    print(f"\n{params}")


if __name__ == "__main__":
    main()
