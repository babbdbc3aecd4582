"""The identity model's recipe, one lever at a time and all together, at one CPU budget, in one run.

Trains the identity model on one CURATED version with `train()` once per recipe, each
under the configured training settings (the demo's, say) plus its own levers, for the
same epochs of the same steps, one run after the other on this machine:

- ``baseline``: the settings as they are;
- ``cosine``: learning-rate warm-up (``--warmup`` epochs) and cosine decay to 0
  (``training.lr_schedule: cosine``);
- ``smoothing``: label smoothing ``--smoothing`` (``training.label_smoothing``);
- ``teacher``: distillation from the dlib embedding of each photo in the crop cache
  (``training.teacher: dlib``, ``--teacher-weight``; several weights sweep it, one run
  ``teacher-<weight>`` each);
- ``teacher-extra``: the teacher also on the crop cache's photos the version does not use,
  ``--teacher-extra`` of them added to every batch, unlabelled (``training.teacher_extra``;
  the first ``--teacher-weight``);
- ``cosface``: the cosine head with a margin (``training.head: cosface``, ``--margin``, ``--scale``);
- ``all``: cosine, smoothing, teacher and cosface together.

Per recipe: training wall time and CPU minutes, epochs, and the honest test top-1
(`evaluate`, the version's test split, split by source photo); then each as a ratio to
the baseline. Aligned crops are not a lever here yet.

Each run lands in ``--out/<recipe>``: a rerun returns a finished run as it is (its CPU
then unknown) and resumes a killed one.

    FACESCALE_STORAGE__ROOT=var/demo .venv/bin/python bench/bench_recipe.py VERSION \\
        --epochs 4 --max-steps 40 --batch-size 32 --image-size 75 --batchnorm-momentum 0.9
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_transfer import add_budget_arguments, budget, print_runs, train_and_test

from facescale.app.services import Services
from facescale.config import TrainingSettings, load_settings

RECIPES = ("baseline", "cosine", "smoothing", "teacher", "teacher-extra", "cosface", "all")


def levers(recipe: str, args: argparse.Namespace, teacher_weight: float) -> dict[str, object]:
    cosine = {"lr_schedule": "cosine", "warmup_epochs": args.warmup}
    smoothing = {"label_smoothing": args.smoothing}
    teacher: dict[str, object] = {"teacher": "dlib", "teacher_weight": teacher_weight}
    cosface: dict[str, object] = {"head": "cosface", "cosface_margin": args.margin, "cosface_scale": args.scale}
    extra = teacher | {"teacher_extra": args.teacher_extra}
    return {"baseline": {}, "cosine": cosine, "smoothing": smoothing, "teacher": teacher, "teacher-extra": extra,
            "cosface": cosface, "all": cosine | smoothing | teacher | cosface}[recipe]


def runs(args: argparse.Namespace) -> list[tuple[str, dict[str, object]]]:
    """(run name, levers) per run: one per recipe, and per teacher weight when several are swept
    (``all`` takes the first)."""
    weights = args.teacher_weight
    out: list[tuple[str, dict[str, object]]] = []
    for recipe in args.recipes:
        if recipe == "teacher" and len(weights) > 1:
            out += [(f"teacher-{w:g}", levers(recipe, args, w)) for w in weights]
        else:
            out.append((recipe, levers(recipe, args, weights[0])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="a CURATED version of the configured store (curated with embeddings)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    add_budget_arguments(parser)
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up epochs of the cosine lever")
    parser.add_argument("--smoothing", type=float, default=0.1)
    parser.add_argument("--teacher-weight", type=float, nargs="+", default=[3.0],
                        help="the teacher's weight; several: one teacher run per weight")
    parser.add_argument("--teacher-extra", type=int, default=8,
                        help="teacher-extra: unlabelled crops from the crop cache added to every batch")
    parser.add_argument("--margin", type=float, default=0.2, help="the cosface lever's cosine margin")
    parser.add_argument("--scale", type=float, default=30.0, help="the cosface lever's scale")
    parser.add_argument("--out", type=Path, default=Path("var/bench-recipe"))
    args = parser.parse_args()

    settings = load_settings(None)
    root = Services(settings).root()
    base = budget(args)
    rows: dict[str, dict[str, float]] = {}
    for name, lever in runs(args):
        training = TrainingSettings.model_validate(settings.training.model_dump() | base | lever)
        rows[name] = train_and_test(root.datasets, args.version, training, args.out / name, args.max_steps, root.crops)
        print(name, json.dumps(rows[name]), flush=True)
    print_runs(rows, "recipe")


if __name__ == "__main__":
    main()
