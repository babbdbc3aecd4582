"""What `facescale identify` gives a user of a registered model: each backend on the version's test photos
and on strangers, and how long the first answer takes.

For one registered model (``latest`` by default) on the configured store:

- every original (not augmented) test photo of its dataset version (split by source photo,
  so none was trained on nor enrolled) goes through each backend's identification
  (`calibration.identification_on`, the crops as curated): top-1, the share answered right
  at the backend's calibrated unknown threshold ("unknown" counts as wrong), the share
  called unknown, and the milliseconds a face (a decoded crop: detection not included);
- with ``--strangers DIR`` (one folder per person, e.g. lfw-dev), faces of up to
  ``--stranger-people`` people the model does not know, two photos each (detected and
  cropped as `identify` does): the share each backend refuses as unknown;
- the first answer: ``facescale identify PHOTO`` in a fresh process (the command a user
  types, the model's default backend), against the same command with ``--backend model``
  (which loads TensorFlow and the Keras model), run alternately ``--rounds`` times; the
  medians and their ratio.

    FACESCALE_STORAGE__ROOT=var/demo .venv/bin/python bench/bench_identify.py \\
        --strangers ../shared/data/lfw-dev --photo ../shared/data/lfw-dev/Angelina_Jolie/Angelina_Jolie_0005.jpg
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from facescale.app.services import Services
from facescale.config import load_settings
from facescale.serving.calibration import identification_on, originals, unseen_photos
from facescale.serving.images import ImageLimits, ImageRejected, load_image
from facescale.serving.recognizer import BACKENDS
from facescale.storage.identities import name_key


def first_answer(photo: Path, extra: list[str], model: str) -> tuple[float, dict]:
    script = Path(sys.executable).with_name("facescale")
    start = time.perf_counter()
    done = subprocess.run([str(script), "identify", str(photo), "--json", "--model", model, *extra],
                          check=True, capture_output=True, text=True, env=os.environ)
    return time.perf_counter() - start, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="latest")
    parser.add_argument("--strangers", type=Path, help="a folder of people, one sub-folder each")
    parser.add_argument("--stranger-people", type=int, default=100)
    parser.add_argument("--photo", type=Path, help="the photo of the first-answer timing")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    services = Services(load_settings(None))
    recognizer = services.recognizer(args.model)
    record = services.models().get(recognizer.model_id)
    store = services.datasets()
    test = originals(store, recognizer.version_id, {"test": None})["test"]
    crops, labels = test.crops, np.array(test.labels)
    evaluated = record.metrics.get("evaluation", {}).get("top1")
    print(f"model {recognizer.model_id} ({recognizer.classes} labels) on {recognizer.version_id}: "
          f"{len(crops)} test photos of {len(set(labels.tolist()))} identities; default backend "
          f"{recognizer.default_backend}; test top-1 of the evaluation (all test samples) {evaluated}")

    stranger_crops: list[np.ndarray] = []
    if args.strangers:
        known = {name_key(v["name"]) for v in recognizer.labels.values()}
        people = unseen_photos(args.strangers, known, args.stranger_people, random.Random(0))
        for photos in people.values():
            for path in photos[:2]:
                try:
                    image = load_image(path.read_bytes(), ImageLimits(), path.name)
                    stranger_crops.append(recognizer.crop(image, recognizer.faces.centre_face(image, path.name)))
                except ImageRejected:
                    pass
        print(f"strangers: {len(stranger_crops)} faces of {len(people)} people the model does not know")

    print(f"{'backend':8} {'top-1':>7} {'right':>7} {'unknown':>8} {'strangers refused':>18} {'ms a face':>10}")
    for backend in BACKENDS:
        start = time.perf_counter()
        measured = identification_on(recognizer, test, "test", [backend])[backend]
        ms = 1000 * (time.perf_counter() - start) / max(1, len(crops))
        refused = "-"
        if stranger_crops:
            others = np.nan_to_num(recognizer.identity_scores(stranger_crops, backend), nan=-np.inf).max(axis=1)
            refused = f"{np.mean(others < recognizer.unknown_threshold(backend)):.4f}"
        print(f"{backend:8} {measured['top1']:7.4f} {measured['answered_right']:7.4f} {measured['unknown']:8.4f} "
              f"{refused:>18} {ms:10.1f}")

    if args.photo:
        default, model = [], []
        for _ in range(args.rounds):
            seconds, answer = first_answer(args.photo, [], recognizer.model_id)
            default.append(seconds)
            seconds_model, answer_model = first_answer(args.photo, ["--backend", "model"], recognizer.model_id)
            model.append(seconds_model)
        face = answer["results"][0]["faces"]
        said = face[0]["identity"] if face else "no face"
        said_model = answer_model["results"][0]["faces"][0]["identity"] if answer_model["results"][0]["faces"] else "-"
        print(f"first answer, `facescale identify {args.photo.name}` in a fresh process, median of {args.rounds}: "
              f"default ({answer['backend']}) {statistics.median(default):.1f} s -> {said or 'unknown'}; "
              f"--backend model {statistics.median(model):.1f} s -> {said_model or 'unknown'}; "
              f"ratio {statistics.median(default) / statistics.median(model):.2f}x")


if __name__ == "__main__":
    main()
