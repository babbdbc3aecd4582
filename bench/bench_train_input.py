"""Training throughput fed from CURATED shards vs fed from in-memory tensors; --scale: the 650-way model.

Default mode, in one process: a CURATED version of the lfw-dev photos' centre crops (as in
bench_input.py, one class per person) and the Inception V3 of `build_model` at --image-size,
compiled as `train()` compiles it. The same model is fitted alternately on

  shards   `CuratedInput.epochs(...)`: row groups read, shuffled, JPEG-decoded, resized and
           batched while the model trains (what `train()` feeds it)
  memory   the same number of images, decoded beforehand into one float32 tensor, fed by
           `tf.data.Dataset.from_tensor_slices(...).batch().repeat()` (no input work left)

for --rounds rounds of --epochs epochs of --steps steps; the first epoch of every fit is a
warm-up and not timed. Prints the best images/s of each and the ratio shards/memory (target
>= 0.9: the input pipeline costs training at most a tenth on this CPU, where decoding
competes with the model for the same cores).

``--scale`` instead registers 650 identities (lfw-dev names) in a fresh identity registry,
writes a CURATED version of them through the storage API (each person's crops replicated to
--per-identity train samples, plus 2 val and 1 test), and runs `train()` itself for
--scale-steps steps with the full 650-way model; prints images/s (timed after the first
step) and the process's peak RSS (VmHWM).

Run:  .venv/bin/python bench/bench_train_input.py [--steps 12 --epochs 3 --rounds 2]
      .venv/bin/python bench/bench_train_input.py --scale [--scale-steps 40] [--nondeterministic]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from bench_input import build, crop, encode  # the same crops as the input benchmark

from facescale.config import TrainingSettings
from facescale.storage import DatasetStore, IdentityEntry, IdentityRegistry, Location
from facescale.training.data import CuratedInput
from facescale.training.model import build_model
from facescale.training.train import train

REPO = Path(__file__).resolve().parents[1]


class EpochTimes(keras.callbacks.Callback):
    """Wall time of every epoch, and per epoch the span from the first batch's end to the last's.

    The span leaves out the first step (tracing) and whatever runs at the epoch's end
    (validation, checkpoints), so it is the training steps alone.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[float] = []
        self.after_first: list[tuple[int, float]] = []  # (batches, seconds) from batch 1 on, per epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()
        self._first: float | None = None
        self._batches = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._batches += 1
        self._last = time.perf_counter()
        if self._first is None:
            self._first = self._last

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs.append(time.perf_counter() - self._start)
        if self._first is not None:
            self.after_first.append((self._batches - 1, self._last - self._first))


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def compiled(classes: int, image_size: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_model(classes, image_size)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def fit_rate(model: keras.Model, data: tf.data.Dataset, steps: int, epochs: int, batch: int) -> float:
    """Best images/s over the epochs after the first (a warm-up) of one fit."""
    times = EpochTimes()
    model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[times])
    return max(steps * batch / t for t in times.epochs[1:])


def compare(args: argparse.Namespace, work: Path) -> None:
    start = time.perf_counter()
    store, version, _, samples, people = build(args.photos, work, args.copies)
    print(f"{samples} samples of {people} people, written in {time.perf_counter() - start:.0f} s")
    size, batch, steps = args.image_size, args.batch, args.steps
    data = CuratedInput(store, version, "train", size)
    needed = steps * batch
    x, y = [], []
    for images, labels in data.dataset(batch, shuffle=True, seed=1):
        x.append(images.numpy())
        y.append(labels.numpy())
        if sum(len(b) for b in y) >= needed:
            break
    x_all, y_all = np.concatenate(x)[:needed], np.concatenate(y)[:needed].astype(np.int32)
    print(f"in-memory copy: {x_all.shape[0]} images, {x_all.nbytes / 2**20:.0f} MB")
    memory = tf.data.Dataset.from_tensor_slices((x_all, y_all)).batch(batch, drop_remainder=True).repeat()
    memory = memory.prefetch(tf.data.AUTOTUNE)
    model = compiled(data.num_classes, size)
    rates: dict[str, list[float]] = {"shards": [], "memory": []}
    for round_ in range(args.rounds):
        shards = data.epochs(batch, steps, end_epoch=args.epochs, seed=round_)
        rates["shards"].append(fit_rate(model, shards, steps, args.epochs, batch))
        rates["memory"].append(fit_rate(model, memory, steps, args.epochs, batch))
        print(f"round {round_ + 1}: shards {rates['shards'][-1]:.1f} img/s, memory {rates['memory'][-1]:.1f} img/s")
    best = {k: max(v) for k, v in rates.items()}
    print(f"model {size}x{size}, {data.num_classes} classes, batch {batch}, {steps} steps x {args.epochs - 1} "
          f"timed epochs x {args.rounds} rounds (best epoch of each)")
    print(f"fed from shards:   {best['shards']:7.1f} images/s")
    print(f"fed from memory:   {best['memory']:7.1f} images/s")
    print(f"ratio shards/memory: {best['shards'] / best['memory']:.2f}x  (target >= 0.9)")
    print(f"peak RSS {peak_rss_mb():.0f} MB")


def scale(args: argparse.Namespace, work: Path) -> None:
    location = Location.from_uri(str(work / "store"))
    people = [d for d in sorted(args.photos.iterdir()) if d.is_dir()][: args.identities]
    if len(people) < args.identities:
        raise SystemExit(f"{args.photos} has only {len(people)} people")
    start = time.perf_counter()
    names = [p.name.replace("_", " ") for p in people]
    registered = [identity for identity, _ in IdentityRegistry(location).add(names)]
    store = DatasetStore(location)
    plan = ["train"] * args.per_identity + ["val"] * 2 + ["test"]
    with store.create("scale", parent=None) as writer:
        entries = []
        for person, identity in zip(people, registered, strict=True):
            photos = sorted(person.glob("*.jpg"))
            crops = [crop(p) for p in photos]
            sources = [hashlib.sha256(p.read_bytes()).hexdigest() for p in photos]
            writer.write(
                {
                    "sample_id": f"{sources[j % len(photos)]}-{j:03d}", "source_image_id": sources[j % len(photos)],
                    "identity": identity.name, "identity_slug": identity.slug, "label": identity.label,
                    "split": split, "aug_index": j // len(photos), "face_box": {"x": 62, "y": 62, "w": 125, "h": 125},
                    "image": encode(crops[j % len(photos)], j // len(photos)), "width": 128, "height": 128,
                    "sharpness": None, "brightness": None, "contrast": None,
                }
                for j, split in enumerate(plan)
            )
            counts = {"train": args.per_identity, "val": 2, "test": 1}
            entries.append(IdentityEntry(name=identity.name, slug=identity.slug, label=identity.label, counts=counts))
        manifest = writer.commit(entries)
    print(f"{len(registered)} identities registered; version of {manifest.rows} rows in {len(manifest.shards)} shards "
          f"written in {time.perf_counter() - start:.0f} s; peak RSS so far {peak_rss_mb():.0f} MB")
    settings = TrainingSettings(
        image_size=args.image_size, batch_size=args.batch, max_epochs=1, stop_metric="loss", stop_threshold=1e-9,
        deterministic=not args.nondeterministic,
    )
    times = EpochTimes()
    start = time.perf_counter()
    result = train(
        store, "scale", settings, work / "run", max_steps_per_epoch=args.scale_steps, validation_steps=1,
        callbacks=[times],
    )
    total = time.perf_counter() - start
    batches, seconds = times.after_first[0]
    mode = "non-deterministic" if args.nondeterministic else "deterministic (one inter-op thread)"
    print(f"train(), {mode}: {result.num_classes}-way Inception V3 at {args.image_size}px, batch {args.batch}, "
          f"{result.steps_per_epoch} steps in {total:.0f} s (build, trace, validation and export included)")
    print(f"training rate after the first step: {batches * args.batch / seconds:.1f} images/s")
    print(f"peak RSS (VmHWM) {peak_rss_mb():.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "lfw-dev")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit (the first is a warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--copies", type=int, default=1, help="samples per photo")
    parser.add_argument("--scale", action="store_true", help="train() on a 650-identity version instead")
    parser.add_argument("--identities", type=int, default=650)
    parser.add_argument("--per-identity", type=int, default=20, help="train samples per identity (--scale)")
    parser.add_argument("--scale-steps", type=int, default=40)
    parser.add_argument(
        "--nondeterministic", action="store_true", help="training.deterministic = false (--scale): ops run side by side"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="facescale-bench-train-"))
    try:
        (scale if args.scale else compare)(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
