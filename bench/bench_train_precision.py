"""Training images/s of the Inception V3 under each lever, as a ratio to float32, alternated in one process.

Every configuration is the 96 px, 650-class (the seed's size) model of `build_model`,
compiled as `train()` compiles it, fed one in-memory batch of random images (the input
pipeline is measured by bench_train_input.py; content does not change the cost). Levers,
each one change from the baseline:

  float32     the baseline: float32, 96 px, batch 64, no XLA
  bfloat16    Keras ``mixed_bfloat16`` (variables float32, compute bfloat16)
  75px        the smallest input Inception V3 takes
  batch32     half the batch
  xla         ``jit_compile=True`` (XLA clusters the training step)

Each configuration is built and traced once (--warmup steps, not timed); then --rounds
rounds run --steps ``train_on_batch`` steps of every configuration in turn, so a noisy
neighbour hits all of them alike. Prints per configuration the best and median round's
images/s, and each median as a ratio to float32's. The CPU's bfloat16 support is printed
first: without AMX-BF16 or AVX512_BF16, bfloat16 is emulated.

``--accuracy VERSION`` (a CURATED version in the configured store, e.g. `scripts/lfw-train.sh`'s
``lfw20``) instead trains the same short run twice with `train()`, float32 then bfloat16
(--epochs epochs of at most --max-steps steps), and prints each run's wall time and test top-1.

Run:  .venv/bin/python bench/bench_train_precision.py [--rounds 3 --steps 6]
      FACESCALE_STORAGE__ROOT=var/lfw20 .venv/bin/python bench/bench_train_precision.py --accuracy lfw20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from facescale.training.model import build_model

LEVERS = {
    "float32": {},
    "bfloat16": {"mixed_precision": "bfloat16"},
    "75px": {"image_size": 75},
    "batch32": {"batch": 32},
    "xla": {"jit_compile": True},
}


def cpu_bf16() -> str:
    flags: set[str] = set()
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    found = sorted(flags & {"amx_bf16", "avx512_bf16", "amx_tile"})
    return ", ".join(found) if found else "none (bfloat16 is emulated)"


def configured(lever: str, classes: int, base_size: int, base_batch: int) -> tuple[keras.Model, tf.Tensor, tf.Tensor]:
    change = LEVERS[lever]
    size, batch = change.get("image_size", base_size), change.get("batch", base_batch)
    keras.utils.set_random_seed(0)
    model = build_model(classes, size, mixed_precision=change.get("mixed_precision", "off"))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=change.get("jit_compile", False),
    )
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, classes, batch).astype("int32"))
    return model, x, y


def throughput(args: argparse.Namespace) -> None:
    print(f"CPU bfloat16 support: {cpu_bf16()}; TensorFlow {tf.__version__}, Keras {keras.__version__}")
    runs = {}
    for lever in args.levers:
        start = time.perf_counter()
        model, x, y = configured(lever, args.classes, args.image_size, args.batch)
        for _ in range(args.warmup):
            model.train_on_batch(x, y)
        runs[lever] = (model, x, y)
        print(f"{lever}: built and traced in {time.perf_counter() - start:.0f} s")
    rates: dict[str, list[float]] = {lever: [] for lever in runs}
    for round_ in range(args.rounds):
        for lever, (model, x, y) in runs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            rates[lever].append(args.steps * int(x.shape[0]) / (time.perf_counter() - start))
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()) + " img/s")
    base = statistics.median(rates["float32"]) if "float32" in rates else None
    print(f"\n{args.classes} classes, base {args.image_size} px batch {args.batch}; {args.rounds} rounds x "
          f"{args.steps} steps each, alternated")
    for lever, values in rates.items():
        median = statistics.median(values)
        ratio = f"{median / base:.2f}x float32" if base else ""
        print(f"{lever:9s} best {max(values):6.1f} img/s, median {median:6.1f}  {ratio}")


def accuracy(args: argparse.Namespace) -> None:
    from facescale.app.services import Services
    from facescale.config import load_settings
    from facescale.training.evaluate import evaluate
    from facescale.training.train import train

    settings = load_settings()
    store = Services(settings).datasets()
    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    print(f"CPU bfloat16 support: {cpu_bf16()}; runs under {work}")
    for mode in ("off", "bfloat16"):
        training = settings.training.model_copy(
            update={"mixed_precision": mode, "max_epochs": args.epochs, "min_epochs": args.epochs,
                    "image_size": args.image_size, "batch_size": args.batch}
        )
        start = time.perf_counter()
        result = train(store, args.accuracy, training, work / mode, max_steps_per_epoch=args.max_steps, verbose=2)
        seconds = time.perf_counter() - start
        metrics = evaluate(store, result.out_dir, work / f"{mode}-eval", batch_size=64, plots=False)
        print(f"{mode:9s} {seconds:7.0f} s, {result.epochs} epochs, test top-1 {metrics.top1:.4f} "
              f"({metrics.examples} test samples)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS))
    parser.add_argument("--classes", type=int, default=650)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accuracy", metavar="VERSION", help="train VERSION twice (float32, bfloat16) instead")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args()
    if args.accuracy:
        accuracy(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
