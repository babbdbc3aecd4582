"""The box dlib's 5-point shape predictor is given: the Haar box serving uses, or it in dlib's HOG convention.

dlib's 5-point shape predictor was trained on boxes from dlib's own HOG detector; serving and
curation give it the Haar cascade's box (the face square inside the crop). This bench runs the
dlib backend's verification on a View 2-style pairs file both ways, photo by photo in one
process: each photo's centred face is found and cropped as serving does
(`FaceFinder.centre_face`, `FaceFinder.crop`), then embedded (a) by serving's `DlibEmbedder`
(the Haar box, `DlibEmbedder.face_box`) and (b) with that box mapped into the HOG convention
(the inverse of `serving.recognizer.hog_to_haar`: side / HOG_SCALE, centre moved back by the
measured shifts). Per fold the threshold of best accuracy on the other folds; accuracy mean
+- std over folds, ROC AUC and coverage (scored pairs) per variant, by the benchmark's own
`score_folds`.

    .venv/bin/facescale benchmark lfw-pairs ../shared/data/lfw-dev pairs.txt
    .venv/bin/python bench/bench_dlib_box.py pairs.txt ../shared/data/lfw-dev
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from facescale.config import load_settings
from facescale.pipeline.curate import crop_params
from facescale.serving.benchmark import Photo, read_pairs, score_folds
from facescale.serving.images import ImageRejected
from facescale.serving.recognizer import HOG_SCALE, HOG_SHIFT_X, HOG_SHIFT_Y, DlibEmbedder, FaceFinder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", type=Path)
    parser.add_argument("images", type=Path, help="Name/Name_NNNN.jpg")
    args = parser.parse_args()

    parsed = read_pairs(args.pairs)
    pairs, photos = parsed.pairs, parsed.photos()
    params = crop_params(load_settings(None).curation)
    finder, dlib = FaceFinder(params), DlibEmbedder(params)
    vectors: dict[str, dict[Photo, np.ndarray]] = {"haar box": {}, "HOG-convention box": {}}
    started = time.perf_counter()
    for photo in photos:
        image = cv2.imread(str(photo.path(args.images)))
        if image is None:
            continue
        try:
            crop = finder.crop(image, finder.centre_face(image, photo.name))
        except ImageRejected:
            continue
        x, y, face, _ = dlib.face_box(crop.shape[0])
        side = face / HOG_SCALE
        cx, cy = x + face / 2 - HOG_SHIFT_X * side, y + face / 2 - HOG_SHIFT_Y * side
        hog = (round(cx - side / 2), round(cy - side / 2), round(side), round(side))
        haar = dlib.embed([crop])[0]  # serving's own path
        if np.all(np.isfinite(haar)):
            vectors["haar box"][photo] = haar
        vector = dlib.ready().embed(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), hog)
        if vector is not None:
            vectors["HOG-convention box"][photo] = vector / np.linalg.norm(vector)
    print(f"{len(photos)} photos, {len(pairs)} pairs, {time.perf_counter() - started:.0f} s")
    index = {photo: i for i, photo in enumerate(photos)}
    first, second = (np.array([index[getattr(p, side)] for p in pairs]) for side in ("first", "second"))
    truth, fold_of = np.array([p.same for p in pairs]), np.array([p.fold for p in pairs])
    for kind, found in vectors.items():
        matrix = np.full((len(photos), 128), np.nan, np.float32)
        for photo, vector in found.items():
            matrix[index[photo]] = vector
        result = score_folds(matrix, first, second, truth, fold_of, parsed.folds, "dlib")
        print(f"{kind:<20} accuracy {result.accuracy_mean:.4f} +- {result.accuracy_std:.4f}  "
              f"ROC AUC {result.roc_auc:.4f}  coverage {result.coverage:.4f}")

if __name__ == "__main__":
    main()
