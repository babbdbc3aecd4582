"""From scratch against distillation from dlib: the same data, the same CPU budget, two recipes.

Trains the identity model twice on one CURATED version with `train()` under the same
settings but ``training.teacher`` (``none``: the softmax loss on the labels only, the
recipe before; ``dlib``: plus ``teacher_weight * (1 - cosine)`` to each sample's dlib
embedding from the crop cache, `training/teacher.py`), for the same epochs of the same
steps, one run after the other in this process's machine. Per recipe it prints the wall
time and CPU time of training, the honest test top-1 (`evaluate`), and with ``--pairs``
the LFW verification of the registered model on a pairs file of people it never saw
(``facescale benchmark lfw --backend model --json`` in a child process), then each
figure of the teacher recipe as a ratio to the scratch one's.

Each run lands in ``--out/<recipe>``: a rerun returns a finished run as it is and
resumes a killed one (`train`), so the comparison can be finished after a crash.

Run (the data of scripts/lfw-train.sh, people the model never saw for the pairs):
    FACESCALE_STORAGE__ROOT=var/lfw20 .venv/bin/python bench/bench_transfer.py lfw20 \\
        --epochs 6 --image-size 75 --out var/lfw20-runs/transfer \\
        --pairs var/lfw20-unseen-pairs.txt --images ../shared/data/lfw-dev
(make the pairs file with ``facescale benchmark lfw-pairs ../shared/data/lfw-dev OUT
--unseen-by MODEL`` for a model trained on lfw20.)
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

from facescale.app.services import Services
from facescale.config import Settings, TrainingSettings
from facescale.storage import CropStore, DatasetStore
from facescale.training.evaluate import evaluate
from facescale.training.rundir import RESULT_FILE
from facescale.training.train import train

RECIPES = ("none", "dlib")


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def train_and_test(
    store: DatasetStore, version: str, training: TrainingSettings, out: Path, max_steps: int | None,
    crops: CropStore | None = None,
) -> dict[str, float]:
    """Train (or return, or resume) the run in ``out``; its wall and CPU seconds, epochs, honest test top-1
    and the number of test photos it was measured on.

    A run returned finished or resumed has its own recorded wall time and an unknown (NaN) CPU time.
    ``crops``: the crop cache the teacher's embeddings are read from (``training.teacher: dlib``).
    """
    finished = (out / RESULT_FILE).is_file()
    cpu, wall = cpu_seconds(), time.perf_counter()
    result = train(store, version, training, out, max_steps_per_epoch=max_steps, crops=crops)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    if finished or result.resumed_from:
        wall, cpu = result.seconds, float("nan")
    tested = evaluate(store, out, plots=False)
    return {"train_s": wall, "cpu_s": cpu, "epochs": result.epochs, "test_top1": tested.top1,
            "test_photos": tested.examples}


def add_budget_arguments(parser: argparse.ArgumentParser, epochs: int = 4) -> None:
    """The training budget's options shared by the recipe benches (unset: the configured setting)."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batchnorm-momentum", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None, help="the runs' seed (weights and input order)")


def budget(args: argparse.Namespace) -> dict[str, object]:
    """`add_budget_arguments`' options as ``training.*`` overrides."""
    base: dict[str, object] = {"max_epochs": args.epochs}
    for key in ("batch_size", "image_size", "batchnorm_momentum", "seed"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    return base


def print_runs(rows: dict[str, dict[str, float]], title: str) -> None:
    """One line per run (`train_and_test`): test top-1 with its 95% interval, ratio to the first, CPU minutes."""
    first = next(iter(rows.values()))
    print(f"\n{title:<11}{'test top-1':>11}{'+-95%':>7}{'ratio':>8}{'train min':>11}{'CPU min':>9}{'epochs':>8}")
    for name, row in rows.items():
        p, n = row["test_top1"], max(row["test_photos"], 1)
        ratio = p / first["test_top1"] if first["test_top1"] else float("nan")
        print(f"{name:<11}{p:>11.4f}{1.96 * math.sqrt(p * (1 - p) / n):>7.3f}{ratio:>7.2f}x{row['train_s'] / 60:>11.1f}"
              f"{row['cpu_s'] / 60:>9.1f}{row['epochs']:>8.0f}")
    print(f"(+-95%: the binomial interval's half-width over the {first['test_photos']} test photos; "
          "a smaller gap between two runs is noise)")


def verify(model_id: str, pairs: Path, images: Path) -> dict[str, float]:
    """The model backend's LFW protocol figures on ``pairs`` (a child ``facescale benchmark lfw``)."""
    command = [sys.executable, "-m", "facescale.app.cli", "benchmark", "lfw", str(pairs), str(images),
               "--model", model_id, "--backend", "model", "--json"]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout)["backends"]["model"]
    return {k: result[k] for k in ("accuracy_mean", "accuracy_std", "roc_auc", "coverage")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="a CURATED version of the configured store, curated with embeddings")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch")
    parser.add_argument("--image-size", type=int, default=75)
    parser.add_argument("--teacher-weight", type=float, default=None, help="default: training.teacher_weight")
    parser.add_argument("--out", type=Path, default=Path("var/bench-transfer"))
    parser.add_argument("--pairs", type=Path, help="an LFW pairs file of people the version does not hold")
    parser.add_argument("--images", type=Path, help="the pairs file's photos (Name/Name_NNNN.jpg)")
    args = parser.parse_args()

    settings = Settings()
    services = Services(settings)
    root = services.root()
    store = root.datasets
    rows: dict[str, dict[str, float]] = {}
    for recipe in RECIPES:
        update: dict[str, object] = {"teacher": recipe, "max_epochs": args.epochs, "image_size": args.image_size}
        if args.teacher_weight is not None:
            update["teacher_weight"] = args.teacher_weight
        training = TrainingSettings.model_validate(settings.training.model_dump() | update)
        out = args.out / recipe
        row = train_and_test(store, args.version, training, out, args.max_steps, root.crops)
        if args.pairs is not None and args.images is not None:
            record = services.register_model(out)  # registered and calibrated, as a trained model is
            row |= {f"unseen_{k}": v for k, v in verify(record.model_id, args.pairs, args.images).items()}
        rows[recipe] = row
        print(recipe, json.dumps(row), flush=True)

    base, taught = rows["none"], rows["dlib"]
    print(f"\n{'figure':<26}{'scratch':>12}{'dlib teacher':>14}{'ratio':>9}")
    for key in base:
        ratio = taught[key] / base[key] if base[key] else float("nan")
        print(f"{key:<26}{base[key]:>12.4f}{taught[key]:>14.4f}{ratio:>8.2f}x")


if __name__ == "__main__":
    main()
