"""The LFW verification protocol (View 2) run through facescale's own serving path.

A pairs file in LFW's ``pairs.txt`` format holds ``F N`` on its first line (folds, pairs per
class per fold), then per fold N matched lines ``Name i j`` and N mismatched lines
``Name1 i Name2 j``; photo ``i`` of ``Name`` is ``IMAGES_DIR/Name/Name_000i.jpg``. Every
photo is looked at once: its face found and cropped as the dataset's curation does
(`recognizer.FaceFinder`), then embedded by each backend (our model's L2-normalised
embedding, or the pretrained dlib ResNet). A pair's score is the cosine similarity.

For each fold the threshold is the one of best accuracy on the other folds' pairs, and the
fold's accuracy counts every pair it could not score (a photo without a usable face) as an
error, as a deployed verifier would fail it. Reported per backend: accuracy mean, standard
deviation and standard error over folds, ROC AUC over the scored pairs, coverage (scored
pairs / all), and every photo that failed with its reason.

Face choice: ``single`` is the API's rule (one face, or one dominating the others: a photo
with several comparable faces fails as ``several_faces``); ``centre`` takes the face nearest
the image centre, the right rule for photos framed on one person as LFW's are.

`make_pairs` writes such a file from any folder of people (one sub-folder each), with
person-disjoint folds as in LFW's View 2, optionally leaving out the people a model knows.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facescale.errors import ConfigError
from facescale.serving.calibration import best_threshold
from facescale.serving.images import ImageLimits, ImageRejected, load_image
from facescale.serving.recognizer import BACKENDS, Backend, FaceFinder

FaceChoice = Literal["single", "centre"]
FACE_CHOICES: tuple[FaceChoice, ...] = ("single", "centre")
Embed = Callable[[Sequence[np.ndarray]], np.ndarray]
_PHOTO = re.compile(r"^(?P<name>.+)_(?P<number>\d{4})\.jpg$")


@dataclass(frozen=True, order=True)
class Photo:
    """Photo ``number`` (1-based) of the person ``name`` (LFW's folder name, underscores for spaces)."""

    name: str
    number: int

    def path(self, images_dir: Path) -> Path:
        return images_dir / self.name / f"{self.name}_{self.number:04d}.jpg"


@dataclass(frozen=True)
class Pair:
    fold: int  # 0-based
    first: Photo
    second: Photo
    same: bool


@dataclass(frozen=True)
class PairsFile:
    """A parsed pairs file: ``folds`` folds of ``per_fold`` matched and ``per_fold`` mismatched pairs."""

    folds: int
    per_fold: int
    pairs: tuple[Pair, ...]

    def photos(self) -> list[Photo]:
        """Every photo the pairs use, once, sorted."""
        return sorted({p for pair in self.pairs for p in (pair.first, pair.second)})

    def text(self) -> str:
        """The file in LFW's format."""
        lines = [f"{self.folds}\t{self.per_fold}"]
        for pair in self.pairs:
            a, b = pair.first, pair.second
            second = f"{b.number}" if pair.same else f"{b.name}\t{b.number}"
            lines.append(f"{a.name}\t{a.number}\t{second}")
        return "\n".join(lines) + "\n"


def read_pairs(path: Path) -> PairsFile:
    """Parse a pairs file (see the module doc).

    Raises:
        ConfigError: the file is unreadable, or a line is not what its position needs (with its number).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the pairs file {path}: {exc}") from None
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise ConfigError(f"pairs file {path} is empty")
    head = lines[0].split()
    if len(head) != 2 or not all(h.isdigit() and int(h) > 0 for h in head):
        raise ConfigError(f"pairs file {path} line 1: expected 'FOLDS PAIRS_PER_FOLD' (e.g. 10 300), got {lines[0]!r}")
    folds, per_fold = int(head[0]), int(head[1])
    expected = 1 + folds * 2 * per_fold
    if len(lines) != expected:
        raise ConfigError(
            f"pairs file {path}: {folds} folds of {per_fold} matched + {per_fold} mismatched pairs need "
            f"{expected - 1} pair lines, found {len(lines) - 1}"
        )
    pairs = []
    for n, line in enumerate(lines[1:], start=2):
        index = n - 2
        fold, same = index // (2 * per_fold), index % (2 * per_fold) < per_fold
        fields = line.split()
        try:
            if same:
                if len(fields) != 3:
                    raise ValueError("a matched pair is 'Name i j'")
                first, second = Photo(fields[0], _number(fields[1])), Photo(fields[0], _number(fields[2]))
            else:
                if len(fields) != 4:
                    raise ValueError("a mismatched pair is 'Name1 i Name2 j'")
                first, second = Photo(fields[0], _number(fields[1])), Photo(fields[2], _number(fields[3]))
                if first.name == second.name:
                    raise ValueError("a mismatched pair names two different people")
        except ValueError as exc:
            kind = "matched" if same else "mismatched"
            raise ConfigError(f"pairs file {path} line {n} (fold {fold + 1}, {kind}): {exc}: {line!r}") from None
        pairs.append(Pair(fold, first, second, same))
    return PairsFile(folds, per_fold, tuple(pairs))


def _number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"photo numbers are positive integers, not {text!r}")
    return int(text)


def people_in(images_dir: Path) -> dict[str, list[int]]:
    """Person -> photo numbers of a folder laid out as LFW (``Name/Name_NNNN.jpg``)."""
    if not images_dir.is_dir():
        raise ConfigError(f"images folder not found: {images_dir}")
    found: dict[str, list[int]] = {}
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        numbers = sorted(
            int(m["number"]) for f in folder.iterdir() if (m := _PHOTO.match(f.name)) and m["name"] == folder.name
        )
        if numbers:
            found[folder.name] = numbers
    return found


def make_pairs(
    images_dir: Path, folds: int = 10, per_fold: int = 300, *, seed: int = 0, exclude: Iterable[str] = ()
) -> PairsFile:
    """Draw a View 2 style pairs file from a folder of people, folds disjoint in people.

    People are dealt to folds at random; a fold's matched pairs are drawn from the photo pairs
    of its people with 2+ photos, its mismatched pairs from two of its people, one photo each.

    Args:
        images_dir: ``Name/Name_NNNN.jpg`` folders (e.g. lfw-dev).
        folds: number of folds (LFW: 10).
        per_fold: matched and mismatched pairs per fold (LFW: 300).
        seed: the draw's seed (the same folder and seed give the same file).
        exclude: folder names (or names with spaces) to leave out, e.g. the people a model trained on.

    Raises:
        ConfigError: too few people or photo pairs for the folds asked for.
    """
    if folds < 2 or per_fold < 1:
        raise ConfigError("a pairs file needs at least 2 folds (thresholds come from the other folds) and 1 pair")
    left_out = {name.replace(" ", "_").casefold() for name in exclude}
    people = {k: v for k, v in people_in(images_dir).items() if k.casefold() not in left_out}
    rng = random.Random(seed)
    names = sorted(people)
    rng.shuffle(names)
    pairs: list[Pair] = []
    for fold in range(folds):
        members = sorted(names[fold::folds])
        matched = [
            (Photo(n, a), Photo(n, b)) for n in members for k, a in enumerate(people[n]) for b in people[n][k + 1 :]
        ]
        if len(matched) < per_fold or len(members) < 2:
            raise ConfigError(
                f"fold {fold + 1} of {folds} has {len(members)} people and {len(matched)} matched photo pairs, "
                f"fewer than the {per_fold} asked for: use fewer folds or pairs per fold"
            )
        for first, second in rng.sample(matched, per_fold):
            pairs.append(Pair(fold, first, second, True))
        seen: set[tuple[Photo, Photo]] = set()
        while len(seen) < per_fold:
            a, b = sorted(rng.sample(members, 2))
            seen.add((Photo(a, rng.choice(people[a])), Photo(b, rng.choice(people[b]))))
        pairs.extend(Pair(fold, first, second, False) for first, second in sorted(seen))
    return PairsFile(folds, per_fold, tuple(pairs))


# -- the protocol ------------------------------------------------------------------------------


@dataclass
class FoldResult:
    fold: int
    threshold: float  # chosen on the other folds
    accuracy: float  # failed pairs counted as errors
    scored: int
    pairs: int


@dataclass
class BackendResult:
    """One backend's View 2 figures."""

    backend: Backend
    folds: list[FoldResult]
    roc_auc: float | None  # over the scored pairs of all folds
    scored_accuracy: float  # mean over folds of the accuracy on scored pairs only
    coverage: float  # scored pairs / pairs
    failed: dict[str, str] = field(default_factory=dict)  # photo path -> reason, beyond the face finder's

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean([f.accuracy for f in self.folds]))

    @property
    def accuracy_std(self) -> float:
        return float(np.std([f.accuracy for f in self.folds], ddof=1)) if len(self.folds) > 1 else 0.0

    @property
    def accuracy_sem(self) -> float:
        return self.accuracy_std / math.sqrt(len(self.folds))

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "accuracy_mean": round(self.accuracy_mean, 4),
            "accuracy_std": round(self.accuracy_std, 4),
            "accuracy_sem": round(self.accuracy_sem, 4),
            "scored_accuracy": round(self.scored_accuracy, 4),
            "roc_auc": None if self.roc_auc is None else round(self.roc_auc, 4),
            "coverage": round(self.coverage, 4),
            "folds": [
                {"fold": f.fold + 1, "threshold": round(f.threshold, 6), "accuracy": round(f.accuracy, 4),
                 "scored": f.scored, "pairs": f.pairs}
                for f in self.folds
            ],
            "failed_photos": dict(sorted(self.failed.items())),
        }


@dataclass
class BenchmarkResult:
    """The protocol's result for every backend run, and the photos no face could be taken from."""

    pairs_file: str
    folds: int
    per_fold: int
    photos: int
    face: FaceChoice
    model_id: str | None
    backends: dict[Backend, BackendResult]
    no_face: dict[str, str]  # photo path -> reason (no_face, several_faces, unreadable)

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": "LFW View 2 (threshold per fold from the other folds; unscored pairs count as errors)",
            "pairs_file": self.pairs_file,
            "folds": self.folds,
            "pairs_per_fold": 2 * self.per_fold,
            "photos": self.photos,
            "face": self.face,
            "model_id": self.model_id,
            "photos_without_a_face": dict(sorted(self.no_face.items())),
            "photos_without_a_face_by_reason": dict(Counter(self.no_face.values())),
            "backends": {name: result.to_json() for name, result in self.backends.items()},
        }


def run_benchmark(
    pairs: PairsFile,
    images_dir: Path,
    finder: FaceFinder,
    embedders: dict[Backend, Embed],
    *,
    face: FaceChoice = "centre",
    limits: ImageLimits | None = None,
    batch: int = 64,
    model_id: str | None = None,
    pairs_name: str = "",
    progress: Callable[[int], None] | None = None,
) -> BenchmarkResult:
    """Embed every photo of ``pairs`` with each backend and score the protocol (see the module doc).

    Args:
        pairs: the parsed pairs file.
        images_dir: where the photos are.
        finder: detection and cropping (the model's dataset version's parameters).
        embedders: backend -> function from BGR crops to unit vectors (NaN rows: no usable face).
        face: ``single`` or ``centre`` (module doc).
        limits: image size limits (the API's by default).
        batch: photos embedded together.
        model_id: reported with the result.
        pairs_name: reported with the result.
        progress: called with the number of photos done after each batch.
    """
    if face not in FACE_CHOICES:
        raise ConfigError(f"face must be one of {', '.join(FACE_CHOICES)}, not {face!r}")
    unknown = set(embedders) - set(BACKENDS)
    if unknown or not embedders:
        raise ConfigError(f"backends must be among {', '.join(BACKENDS)}, got {sorted(embedders)}")
    limits = limits or ImageLimits()
    photos = pairs.photos()
    index = {photo: i for i, photo in enumerate(photos)}
    vectors: dict[Backend, np.ndarray | None] = dict.fromkeys(embedders)
    no_face: dict[str, str] = {}
    for start in range(0, len(photos), batch):
        chunk = photos[start : start + batch]
        crops, where = [], []
        for offset, photo in enumerate(chunk):
            path = photo.path(images_dir)
            try:
                image = load_image(path.read_bytes(), limits, str(path))
                box = finder.centre_face(image, str(path)) if face == "centre" else finder.single_face(image, str(path))
            except FileNotFoundError:
                no_face[str(path)] = "missing"
                continue
            except ImageRejected as exc:
                no_face[str(path)] = exc.reason
                continue
            crops.append(finder.crop(image, box))
            where.append(start + offset)
        for backend, embed in embedders.items():
            if crops:
                embedded = np.asarray(embed(crops), np.float32)
                table = vectors[backend]
                if table is None:
                    table = vectors[backend] = np.full((len(photos), embedded.shape[1]), np.nan, np.float32)
                table[where] = embedded
        if progress is not None:
            progress(min(start + batch, len(photos)))
    first = np.array([index[p.first] for p in pairs.pairs])
    second = np.array([index[p.second] for p in pairs.pairs])
    truth = np.array([p.same for p in pairs.pairs])
    fold_of = np.array([p.fold for p in pairs.pairs])
    results = {}
    for backend, stored in vectors.items():
        # None: no photo gave a face (all are in no_face), so every row is unscorable
        table = np.full((len(photos), 1), np.nan, np.float32) if stored is None else stored
        failed = {
            str(photo.path(images_dir)): "no_embedding"
            for photo, row in zip(photos, table, strict=True)
            if str(photo.path(images_dir)) not in no_face and not np.all(np.isfinite(row))
        }
        results[backend] = score_folds(table, first, second, truth, fold_of, pairs.folds, backend, failed)
    return BenchmarkResult(
        pairs_name, pairs.folds, pairs.per_fold, len(photos), face, model_id, results, no_face
    )


def score_folds(
    vectors: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    truth: np.ndarray,
    fold_of: np.ndarray,
    folds: int,
    backend: Backend,
    failed: dict[str, str] | None = None,
) -> BackendResult:
    """The protocol's figures from photo vectors (NaN rows unscorable) and pair index arrays."""
    from sklearn.metrics import roc_auc_score

    scores = np.einsum("ij,ij->i", vectors[first], vectors[second])
    scored = np.isfinite(scores)
    fold_results, scored_accuracies = [], []
    for k in range(folds):
        here = fold_of == k
        train = ~here & scored
        if truth[train].all() or not truth[train].any():
            threshold = math.inf  # the other folds scored no pair of one kind: nothing is called the same
        else:
            threshold = best_threshold(scores[train], truth[train])
        test = here & scored
        correct = int(np.sum((scores[test] >= threshold) == truth[test]))
        fold_results.append(FoldResult(k, float(threshold), correct / max(int(here.sum()), 1), int(test.sum()),
                                       int(here.sum())))
        scored_accuracies.append(correct / max(int(test.sum()), 1))
    both = bool(truth[scored].any() and (~truth[scored]).any())
    auc = float(roc_auc_score(truth[scored], scores[scored])) if both else None
    return BackendResult(
        backend, fold_results, auc, float(np.mean(scored_accuracies)), float(scored.mean()), dict(failed or {})
    )
