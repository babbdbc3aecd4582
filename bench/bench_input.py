"""Training input throughput: our tf.data pipeline vs the model's training rate and vs Keras' folder loader.

Builds, in a temporary directory, the same face crops two ways: (a) a CURATED version
written with facescale.storage (the lfw-dev photos' centre crops as 128 px JPEGs, quality
95, like curation's crops; ``--copies`` samples per photo, as augmentation multiplies
them), and (b) one JPEG file per sample in per-identity folders. Then, in one process:

  pipeline    `CuratedInput(...).dataset(batch, shuffle=True)`: row groups read in parallel,
              shuffled, JPEG decode, resize to --image-size, scale to [-1, 1], batch
              (deterministic order, as training uses; the non-deterministic mode apart)
  directory   `keras.utils.image_dataset_from_directory` over (b), same size, shuffled,
              with the same [-1, 1] scaling
  model       Inception V3 (`build_model`, one class per person) training steps at --batch
              on in-memory tensors: what the pipeline has to keep fed

  read only   the same two inputs without decoding (encoded bytes and labels): where
              the storage formats differ, apart from the JPEG decoding both must do

Each input is timed over whole epochs (best of --repeat); the model over --steps steps
after two warm-up steps. Prints images/s and the ratios pipeline/model (must be >= 5:
the input never the bottleneck) and pipeline/directory (aim: >= 3).
Run:  .venv/bin/python bench/bench_input.py [--repeat 3] [--copies 2] [--steps 8] [--photos DIR]

``--scale`` instead writes a version of the issue's size (650 identities x 350 train + 10
val + 5 test samples, crops reused) and streams --scale-samples training samples from it,
printing the index time, images/s, distinct labels per batch and the process RSS as it
goes (it must stay flat: memory is bounded by the shuffle blocks, not the dataset).
Run:  .venv/bin/python bench/bench_input.py --scale [--scale-samples 120000]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from facescale.storage import DatasetStore, IdentityEntry, Location
from facescale.training.data import CuratedInput
from facescale.training.model import build_model

REPO = Path(__file__).resolve().parents[1]
CROP = 128


def crop(path: Path) -> Image.Image:
    with Image.open(path) as photo:
        rgb = photo.convert("RGB")
        w, h = rgb.size
        return rgb.crop((w // 4, h // 4, w - w // 4, h - h // 4)).resize((CROP, CROP), Image.Resampling.BILINEAR)


def encode(image: Image.Image, copy: int) -> bytes:
    if copy % 2:  # a different sample, as an augmented copy would be
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if copy > 1:
        image = image.rotate(3 * copy, resample=Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def build(photos: Path, work: Path, copies: int) -> tuple[DatasetStore, str, Path, int, int]:
    """Write the CURATED version and the folder tree; return both and (samples, people)."""
    store = DatasetStore(Location.from_uri(str(work / "store")))
    folders = work / "folders"
    people = [d for d in sorted(photos.iterdir()) if d.is_dir()]
    rows, entries = [], []
    for label, person in enumerate(people):
        slug = f"p{label:04d}"
        (folders / slug).mkdir(parents=True)
        files = sorted(person.glob("*.jpg"))
        for path in files:
            face = crop(path)
            source = hashlib.sha256(path.read_bytes()).hexdigest()
            for copy in range(copies):
                data = encode(face, copy)
                (folders / slug / f"{source[:16]}-{copy}.jpg").write_bytes(data)
                rows.append({
                    "sample_id": f"{source}-{copy:03d}", "source_image_id": source, "identity": person.name,
                    "identity_slug": slug, "label": label, "split": "train", "aug_index": copy,
                    "face_box": {"x": 62, "y": 62, "w": 125, "h": 125}, "image": data,
                    "width": CROP, "height": CROP, "sharpness": None, "brightness": None, "contrast": None,
                })
        entries.append(IdentityEntry(name=person.name, slug=slug, label=label, counts={"train": len(files) * copies}))
    with store.create("bench", parent=None) as writer:
        writer.write(rows)
        writer.commit(entries)
    return store, "bench", folders, len(rows), len(people)


def scale(photos: Path, work: Path, samples: int) -> None:
    """The issue's scale: 650 identities x 365 samples, streamed with bounded memory."""
    crops = [encode(crop(p), 0) for p in sorted(photos.glob("*/*.jpg"))[:1300]]
    store = DatasetStore(Location.from_uri(str(work / "store")))
    plan = ["train"] * 350 + ["val"] * 10 + ["test"] * 5
    start = time.perf_counter()
    with store.create("scale", parent=None) as writer:
        entries = []
        for ident in range(650):
            writer.write(
                {
                    "sample_id": f"{ident}-{j}", "source_image_id": f"{ident}-{j // 10}", "identity": f"P{ident}",
                    "identity_slug": f"p{ident}", "label": ident, "split": split, "aug_index": j % 10,
                    "face_box": {"x": 0, "y": 0, "w": CROP, "h": CROP}, "image": crops[(2 * ident + j) % len(crops)],
                    "width": CROP, "height": CROP, "sharpness": None, "brightness": None, "contrast": None,
                }
                for j, split in enumerate(plan)
            )
            entries.append(IdentityEntry(name=f"P{ident}", slug=f"p{ident}", label=ident,
                                         counts={"train": 350, "val": 10, "test": 5}))
        manifest = writer.commit(entries)
    size_mb = sum(s.bytes for s in manifest.shards) / 2**20
    print(f"{manifest.rows} rows in {len(manifest.shards)} shards ({size_mb:.0f} MB), "
          f"written in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    data = CuratedInput(store, "scale", "train", 96)
    print(f"index: {len(data.row_groups)} row groups in {time.perf_counter() - start:.2f} s; "
          f"{data.num_examples} train examples, {data.num_classes} classes, {data.groups_per_block} row groups/block")
    stream = data.epochs(64, data.steps(64, drop_remainder=True), end_epoch=1, seed=0)
    start, seen, distinct = time.perf_counter(), 0, []
    for _, labels in stream:
        seen += len(labels)
        distinct.append(len(set(labels.numpy().tolist())))
        if seen % 20_000 < 64:
            print(f"  {seen:7d} samples  RSS {rss_mb():6.0f} MB")
        if seen >= samples:
            break
    print(f"streamed {seen} samples at {seen / (time.perf_counter() - start):.0f} images/s; "
          f"distinct labels per batch of 64: {np.mean(distinct):.1f}; peak RSS {peak_rss_mb():.0f} MB")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def epoch_rate(make: Callable[[int], tf.data.Dataset], repeat: int) -> float:
    """Best images/s over ``repeat`` full epochs (a new epoch's dataset each time)."""
    best = 0.0
    for epoch in range(repeat):
        start = time.perf_counter()
        n = sum(int(labels.shape[0]) for _, labels in make(epoch))
        best = max(best, n / (time.perf_counter() - start))
    return best


def model_rate(classes: int, image_size: int, batch: int, steps: int) -> float:
    keras.utils.set_random_seed(0)
    model = build_model(classes, image_size)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, classes, batch)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "lfw-dev")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copies", type=int, default=2, help="samples per photo")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64, help="input batch size")
    parser.add_argument("--model-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="timed model steps")
    parser.add_argument("--scale", action="store_true", help="the 650 x 350 streaming check instead")
    parser.add_argument("--scale-samples", type=int, default=120_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    size = args.image_size
    work = Path(tempfile.mkdtemp(prefix="facescale-bench-input-"))
    try:
        if args.scale:
            scale(args.photos, work, args.scale_samples)
            return
        start = time.perf_counter()
        store, version, folders, samples, people = build(args.photos, work, args.copies)
        print(f"{samples} samples of {people} people ({CROP} px JPEG), written in {time.perf_counter() - start:.0f} s")

        start = time.perf_counter()
        data = CuratedInput(store, version, "train", size)
        print(f"pipeline index: {len(data.row_groups)} row groups in {time.perf_counter() - start:.2f} s")
        start = time.perf_counter()
        directory = keras.utils.image_dataset_from_directory(
            folders, labels="inferred", label_mode="int", image_size=(size, size),
            batch_size=args.batch, shuffle=True, seed=0, verbose=False,
        ).map(lambda x, y: (x / 127.5 - 1.0, y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
        print(f"directory listing: {time.perf_counter() - start:.2f} s")

        files = [str(p) for p in sorted(folders.glob("*/*.jpg"))]

        def read_files(epoch: int) -> tf.data.Dataset:  # the folder loader's reading, without decoding
            order = np.random.default_rng(epoch).permutation(len(files))
            paths = tf.data.Dataset.from_tensor_slices([files[i] for i in order])
            return paths.map(lambda p: (tf.io.read_file(p), 0), num_parallel_calls=tf.data.AUTOTUNE).batch(args.batch)

        results = {
            "read only: pipeline": epoch_rate(
                lambda e: data.encoded(shuffle=True, epoch=e).batch(args.batch), args.repeat
            ),
            "read only: directory": epoch_rate(read_files, args.repeat),
            "pipeline": epoch_rate(lambda e: data.dataset(args.batch, shuffle=True, epoch=e), args.repeat),
            "pipeline (non-deterministic)": epoch_rate(
                lambda e: data.dataset(args.batch, shuffle=True, epoch=e, deterministic=False), args.repeat
            ),
            "directory": epoch_rate(lambda e: directory, args.repeat),
            "model": model_rate(people, size, args.model_batch, args.steps),
        }
        for name, rate in results.items():
            print(f"{name:30s} {rate:9.1f} images/s")
        print(f"input {size}x{size}, batch {args.batch}; model batch {args.model_batch}, {people} classes, "
              f"best of {args.repeat} epochs / {args.steps} steps")
        print(f"ratio pipeline/model:     {results['pipeline'] / results['model']:6.1f}x  (must be >= 5)")
        print(f"ratio pipeline/directory: {results['pipeline'] / results['directory']:6.2f}x  (aim >= 3)")
        print(f"ratio read only:          {results['read only: pipeline'] / results['read only: directory']:6.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
