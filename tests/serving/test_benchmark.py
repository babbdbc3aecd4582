"""The LFW verification protocol: pairs files, fold thresholds, failures counted, and the CLI on real photos."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from facescale.errors import ConfigError
from facescale.serving.benchmark import Pair, Photo, make_pairs, read_pairs, score_folds

from ..helpers import Result
from .conftest import Served

# lfw-dev people with enough photos for matched pairs in every fold
PEOPLE = (
    "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Jacques_Chirac", "Vladimir_Putin", "Hans_Blix",
    "Kofi_Annan", "Bill_Clinton",
)
BLANK = Photo("Kofi_Annan", 1)


def test_a_pairs_file_round_trips_in_lfw_format(tmp_path: Path) -> None:
    text = "2\t1\nAl_Gore\t1\t2\nAl_Gore\t1\tTony_Blair\t3\nAbdullah\t2\t4\nAbdullah\t1\tAdam_Sandler\t1\n"
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    pairs = read_pairs(path)
    assert (pairs.folds, pairs.per_fold) == (2, 1)
    assert pairs.pairs[1] == Pair(0, Photo("Al_Gore", 1), Photo("Tony_Blair", 3), False)
    assert pairs.pairs[2] == Pair(1, Photo("Abdullah", 2), Photo("Abdullah", 4), True)
    assert [p.fold for p in pairs.pairs] == [0, 0, 1, 1] and [p.same for p in pairs.pairs] == [True, False] * 2
    assert pairs.text() == text
    assert Photo("Al_Gore", 12).path(tmp_path) == tmp_path / "Al_Gore" / "Al_Gore_0012.jpg"
    assert len(pairs.photos()) == 7  # 8 references, Al_Gore 1 counted once


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("ten 300\n", "line 1: expected 'FOLDS PAIRS_PER_FOLD'"),
        ("1 1\nA 1 2\n", "need 2 pair lines, found 1"),
        ("1 1\nA 1 B 2\nA 1 B 2\n", "line 2 (fold 1, matched): a matched pair is 'Name i j'"),
        ("1 1\nA 1 2\nA 1 2\n", "line 3 (fold 1, mismatched): a mismatched pair is"),
        ("1 1\nA 1 2\nA 1 A 2\n", "line 3 (fold 1, mismatched): a mismatched pair names two different people"),
        ("1 1\nA 0 2\nA 1 B 2\n", "line 2 (fold 1, matched): photo numbers are positive integers, not '0'"),
    ],
)
def test_a_malformed_pairs_file_names_its_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_pairs(path)


def test_made_pairs_have_folds_disjoint_in_people_and_leave_out_whom_they_are_told(lfw_dev: Path) -> None:
    made = make_pairs(lfw_dev, folds=4, per_fold=20, seed=3, exclude=["Colin Powell", "Tony_Blair"])
    assert made == make_pairs(lfw_dev, folds=4, per_fold=20, seed=3, exclude=["Colin Powell", "Tony_Blair"])
    assert len(made.pairs) == 4 * 40
    people = [{p.name for pair in made.pairs if pair.fold == k for p in (pair.first, pair.second)} for k in range(4)]
    assert all(not (people[a] & people[b]) for a in range(4) for b in range(a + 1, 4))
    assert not ({"Colin_Powell", "Tony_Blair"} & set().union(*people))
    for pair in made.pairs:
        assert (pair.first.name == pair.second.name) is pair.same and pair.first != pair.second
        assert pair.first.path(lfw_dev).is_file() and pair.second.path(lfw_dev).is_file()
    assert len({(p.first, p.second) for p in made.pairs}) == len(made.pairs)  # no pair twice
    with pytest.raises(ConfigError, match="fewer than the 5000 asked for"):
        make_pairs(lfw_dev, folds=10, per_fold=5000)


def _unit(angle: float) -> list[float]:
    return [float(np.cos(angle)), float(np.sin(angle))]


def test_each_fold_is_scored_with_the_threshold_of_the_other_folds_and_failures_are_errors() -> None:
    # photos 0..7; fold 0 pairs similar at cos(0.2) are the same, fold 1's same pairs are at cos(0.6)
    vectors = np.array([_unit(0), _unit(0.2), _unit(2.0), _unit(0), _unit(0.6), _unit(2.0), _unit(1.0), [np.nan] * 2])
    first = np.array([0, 0, 3, 3, 6, 3])
    second = np.array([1, 2, 4, 5, 7, 7])
    truth = np.array([True, False, True, False, True, False])
    fold_of = np.array([0, 0, 1, 1, 1, 1])
    failed = {"x.jpg": "no_embedding"}
    result = score_folds(vectors.astype(np.float32), first, second, truth, fold_of, 2, "dlib", failed)
    # fold 0's threshold comes from fold 1: its best threshold is cos(0.6) (same at 0.825, different at -0.42),
    # which still calls fold 0's same pair (0.98) the same
    assert result.folds[0].threshold == pytest.approx(np.cos(0.6), abs=1e-6)
    assert result.folds[0].accuracy == 1.0 and result.folds[0].scored == 2
    # fold 1: threshold from fold 0 (cos(0.2)) misses its same pair at cos(0.6); two pairs unscored
    assert result.folds[1].threshold == pytest.approx(np.cos(0.2), abs=1e-6)
    assert (result.folds[1].scored, result.folds[1].pairs) == (2, 4)
    assert result.folds[1].accuracy == pytest.approx(1 / 4)  # one right of four: unscored pairs count as errors
    assert result.scored_accuracy == pytest.approx((1.0 + 0.5) / 2)
    assert result.coverage == pytest.approx(4 / 6) and result.roc_auc == 1.0
    assert result.accuracy_mean == pytest.approx(0.625)
    assert result.accuracy_std == pytest.approx(np.std([1.0, 0.25], ddof=1))
    out = result.to_json()
    assert out["failed_photos"] == {"x.jpg": "no_embedding"} and [f["fold"] for f in out["folds"]] == [1, 2]


@pytest.fixture
def people(lfw_dev: Path, tmp_path: Path) -> Path:
    """Eight lfw-dev people's first 4 photos; Kofi Annan's first photo replaced by a blank one (no face)."""
    root = tmp_path / "people"
    for name in PEOPLE:
        (root / name).mkdir(parents=True)
        for path in sorted((lfw_dev / name).glob("*.jpg"))[:4]:
            shutil.copy(path, root / name / path.name)
    cv2.imwrite(str(BLANK.path(root)), np.full((250, 250, 3), 128, np.uint8))
    return root


def _pairs_with_the_blank_photo(cli: Callable[..., Result], people: Path, tmp_path: Path) -> tuple[Path, int]:
    """A 2-fold pairs file of the eight people in which a matched pair uses the blank photo; how many pairs do."""
    out = tmp_path / "pairs.txt"
    made = cli("benchmark", "lfw-pairs", str(people), str(out), "--folds", "2", "--pairs", "8", "--seed", "1")
    assert made.code == 0, made.err
    assert f"wrote {out}: 2 folds x 16 pairs, 8 people" in made.out
    text = out.read_text().splitlines()
    # make sure a pair uses the blank photo: the first matched pair of Kofi Annan's fold becomes (1, 2)
    fold = next(k for k, line in enumerate(text[1:]) if "Kofi_Annan" in line) // 16
    text[1 + 16 * fold] = "Kofi_Annan\t1\t2"
    out.write_text("\n".join(text) + "\n")
    return out, sum(BLANK in (p.first, p.second) for p in read_pairs(out).pairs)


def test_the_dlib_backend_verifies_lfw_pairs_and_counts_the_photo_without_a_face(
    cli: Callable[..., Result], people: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", str(tmp_path / "store"))  # no model needed for dlib
    pairs, blanks = _pairs_with_the_blank_photo(cli, people, tmp_path)
    result = cli("benchmark", "lfw", str(pairs), str(people), "--backend", "dlib", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["photos_without_a_face"] == {str(BLANK.path(people)): "no_face"} and report["model_id"] is None
    dlib = report["backends"]["dlib"]
    assert list(report["backends"]) == ["dlib"] and [f["pairs"] for f in dlib["folds"]] == [16, 16]
    assert dlib["coverage"] == pytest.approx((32 - blanks) / 32)  # pairs with the blank photo are not scored
    # the pretrained embedder tells these people apart (chance is 0.5); the unscored pair is an error
    assert dlib["roc_auc"] >= 0.95 and dlib["scored_accuracy"] >= 0.85
    assert dlib["accuracy_mean"] < dlib["scored_accuracy"]
    table = cli("benchmark", "lfw", str(pairs), str(people), "--backend", "dlib")
    assert table.code == 0 and f"{dlib['accuracy_mean']:.4f} +- {dlib['accuracy_std']:.4f}" in table.out
    assert "photos that count as errors in their pairs: 1 no_face" in table.out
    assert blanks >= 1


def test_bad_benchmark_input_is_one_error_line(cli: Callable[..., Result], tmp_path: Path) -> None:
    bad = tmp_path / "pairs.txt"
    bad.write_text("1 1\nA 1 2\n")
    assert "need 2 pair lines, found 1" in cli("benchmark", "lfw", str(bad), str(tmp_path)).single_error_line()
    assert "unknown backend 'x'" in cli("benchmark", "lfw", str(bad), str(tmp_path), "-b", "x").single_error_line()
    bad.write_text("1 1\nA 1 2\nA 1 B 1\n")
    missing = cli("benchmark", "lfw", str(bad), str(tmp_path / "nowhere"), "-b", "dlib").single_error_line()
    assert "images folder not found" in missing
    made = cli("benchmark", "lfw-pairs", str(tmp_path), str(tmp_path / "p.txt"), "--folds", "2")
    assert "fold 1 of 2 has 0 people" in made.single_error_line()


def test_both_backends_on_a_registered_model(
    cli: Callable[..., Result], served_base: Served, people: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model backend runs through the registered model (untrained here: its figures are mechanics only)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", str(served_base.root))
    monkeypatch.setenv("FACESCALE_SERVING__CACHE_DIR", str(tmp_path / "cache"))
    pairs, blanks = _pairs_with_the_blank_photo(cli, people, tmp_path)
    result = cli("benchmark", "lfw", str(pairs), str(people), "--model", served_base.model_id, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["model_id"] == served_base.model_id and list(report["backends"]) == ["model", "dlib"]
    model, dlib = report["backends"]["model"], report["backends"]["dlib"]
    assert model["coverage"] == pytest.approx((32 - blanks) / 32) and model["failed_photos"] == {}
    assert 0 <= model["accuracy_mean"] <= 1 and len(model["folds"]) == 2
    assert dlib["roc_auc"] >= 0.95  # the same crops as the model's, through the model's dataset crop parameters
