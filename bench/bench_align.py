"""Aligned crops as a recipe lever: the same version with every face aligned on its five landmarks, same training.

From one CURATED version this writes a twin version into a scratch store (``--out/store``):
every source photo's curated crop is aligned (`FaceEmbedder.align`: dlib's 5-point shape
predictor, then a similarity transform onto its canonical face, ``--padding`` of the face
side around it, at the crop's size), and every sample of that photo is made again from the
aligned chip exactly as curation makes samples (copy 0 the chip, copy k `augmented_copy` with
the version's seed and augmentation ranges). The split, labels and sample ids are the
version's own; a photo dlib finds no landmarks in keeps its Haar crop (counted).

Then it trains the identity model on both versions under the configured training settings
plus the overrides below, one run after the other, and prints each run's honest test
top-1 (the version's test split, aligned in the twin) with its 95% interval, the ratio to
the Haar crops' run, and the training CPU minutes. Runs land in ``--out/baseline`` and
``--out/aligned``; a finished run is returned as it is (point ``--out`` at
`bench_recipe.py`'s folder to reuse its baseline), a killed one resumes.

    FACESCALE_STORAGE__ROOT=var/demo .venv/bin/python bench/bench_align.py nightly-20261206 \\
        --epochs 16 --max-steps 40 --batch-size 32 --image-size 75 --batchnorm-momentum 0.9 --out var/recipe16
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from bench_transfer import add_budget_arguments, budget, print_runs, train_and_test

from facescale.app.services import Services
from facescale.config import TrainingSettings, load_settings
from facescale.pipeline.augment import AugmentParams, augmented_copy
from facescale.pipeline.embeddings import FaceEmbedder
from facescale.pipeline.faces import quality
from facescale.storage import DatasetStore, Location


def aligned_twin(store: DatasetStore, version: str, twin: DatasetStore, padding: float) -> tuple[int, int]:
    """Write ``version`` with aligned crops into ``twin`` (same id); return (photos aligned, photos kept as Haar)."""
    manifest = store.get(version)
    if twin.exists(version):
        return -1, -1
    config = manifest.config
    margin = float(config["crop"]["margin"])
    embedder = FaceEmbedder(margin / (1.0 + 2.0 * margin))  # the face box inside a crop with that margin
    params = AugmentParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["augment"].items()})
    rows_by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for batch in store.iter_batches(version, batch_size=1024):
        for row in batch.to_pylist():
            rows_by_source[row["source_image_id"]].append(row)
    aligned = kept = 0
    with twin.create(version, parent=None, config=config | {"aligned_twin": {"padding": padding}}) as writer:
        for source, rows in rows_by_source.items():
            original = next(r for r in rows if r["aug_index"] == 0)
            bgr = cv2.imdecode(np.frombuffer(original["image"], np.uint8), cv2.IMREAD_COLOR)
            chip = embedder.align(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size=bgr.shape[0], padding=padding)
            if chip is None:
                kept += 1
                writer.write(rows)
                continue
            aligned += 1
            face = cv2.cvtColor(chip, cv2.COLOR_RGB2BGR)
            out = []
            for row in rows:
                copy = augmented_copy(face, source, row["aug_index"], int(config["seed"]), params)
                ok, data = cv2.imencode(".jpg", copy, [cv2.IMWRITE_JPEG_QUALITY, 95])
                assert ok
                sharpness, brightness, contrast = quality(copy)
                out.append(row | {"image": data.tobytes(), "width": copy.shape[1], "height": copy.shape[0],
                                  "sharpness": sharpness, "brightness": brightness, "contrast": contrast})
            writer.write(out)
        writer.commit(manifest.identities)
    return aligned, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version", help="a CURATED version of the configured store")
    add_budget_arguments(parser)
    parser.add_argument("--padding", type=float, default=0.25, help="margin around dlib's canonical face")
    parser.add_argument("--out", type=Path, default=Path("var/bench-align"))
    args = parser.parse_args()

    settings = load_settings(None)
    root = Services(settings).root()
    store = root.datasets
    twin = DatasetStore(Location.from_uri(str((args.out / "store").resolve())))
    aligned, kept = aligned_twin(store, args.version, twin, args.padding)
    if aligned >= 0:
        print(f"aligned twin of {args.version}: {aligned} photos aligned, {kept} kept as Haar crops (no landmarks)")
    training = TrainingSettings.model_validate(settings.training.model_dump() | budget(args))
    rows = {
        "baseline": train_and_test(store, args.version, training, args.out / "baseline", args.max_steps, root.crops),
        # the twin has no crop cache: a teacher reads the original photos' embeddings (same source ids)
        "aligned": train_and_test(twin, args.version, training, args.out / "aligned", args.max_steps, root.crops),
    }
    print_runs(rows, "crops")

if __name__ == "__main__":
    main()
