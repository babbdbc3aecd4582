"""export: a version as ImageFolder, WebDataset and Parquet, each loaded by the library people use for it.

torchvision is not installed here (its CPU wheel does not install beside this environment's
packages), so the ImageFolder export is read the way ``torchvision.datasets.ImageFolder`` reads
it: class folders sorted by name give the class indices, every file under them is a sample.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import datasets
import PIL.Image
import pytest
import webdataset as wds
import yaml
from datasets import load_dataset
from PIL import Image

from facescale.errors import ConflictError
from facescale.storage import Location
from facescale.storage.export import STATE_DIR, export_version

from .conftest import ProductStore

SPLITS = ("train", "val", "test")
HF = {"train": "train", "val": "validation", "test": "test"}


def _expected(product_store: ProductStore, version: str, originals_only: bool = False) -> dict[str, Counter[int]]:
    """split -> label -> samples, read from the version's shards."""
    found: dict[str, Counter[int]] = {s: Counter() for s in SPLITS}
    for batch in product_store.store.iter_batches(version, columns=["split", "label", "aug_index"]):
        columns = (batch.column(c).to_pylist() for c in ("split", "label", "aug_index"))
        for split, label, aug in zip(*columns, strict=True):
            if not originals_only or aug == 0:
                found[split][label] += 1
    return found


def _export(product_store: ProductStore, dest: Path, fmt: str, **options):
    return export_version(product_store.store, "v2", Location.from_uri(str(dest)), fmt, **options)


def _files(dest: Path) -> dict[str, tuple[int, int]]:
    """Every exported file (not the resume state) -> (inode, mtime_ns)."""
    return {
        str(p.relative_to(dest)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in dest.rglob("*")
        if p.is_file() and STATE_DIR not in p.parts
    }


def test_imagefolder_reads_as_torchvision_would(product_store: ProductStore, tmp_path: Path) -> None:
    dest = tmp_path / "folder"
    summary = _export(product_store, dest, "imagefolder")
    labels = json.loads((dest / "labels.json").read_text())
    label_of = {i["folder"]: i["label"] for i in labels["identities"]}
    for split in SPLITS:
        classes = sorted(d.name for d in (dest / split).iterdir() if d.is_dir())  # ImageFolder's class order
        assert [label_of[c] for c in classes] == sorted(label_of[c] for c in classes)  # index order = label order
        found: Counter[int] = Counter()
        for folder in classes:
            for image in (dest / split / folder).iterdir():
                with Image.open(image) as decoded:
                    assert decoded.size == (250, 250)
                found[label_of[folder]] += 1
        assert found == _expected(product_store, "v2")[split]
    assert summary.samples == product_store.store.get("v2").rows
    assert (dest / "README.md").read_text().count("data_files") == 1


def test_webdataset_reads_with_its_own_library(product_store: ProductStore, tmp_path: Path) -> None:
    dest = tmp_path / "wds"
    _export(product_store, dest, "webdataset")
    expected = _expected(product_store, "v2")
    for split in SPLITS:
        urls = sorted(str(p) for p in (dest / split).glob("*.tar"))
        dataset = wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg", "cls", "json")
        found: Counter[int] = Counter()
        keys = set()
        for image, label, meta in dataset:
            assert image.size == (250, 250)
            assert label == meta["label"] and meta["split"] == split
            keys.add(meta["sample_id"])
            found[label] += 1
        assert found == expected[split]
        assert len(keys) == sum(found.values())


def test_parquet_export_and_the_shards_load_with_hugging_face_datasets(product_store: ProductStore, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    dest = tmp_path / "parquet"
    _export(product_store, dest, "parquet", originals_only=True)
    expected = _expected(product_store, "v2", originals_only=True)
    names = ["Ada Lovelace", "Alan Turing", "Grace Hopper"]
    loaded = load_dataset("parquet", data_dir=str(dest / "data"))
    assert set(loaded) == {HF[s] for s in SPLITS}
    for split in SPLITS:
        part = loaded[HF[split]]
        assert Counter(part["label"]) == expected[split]
        assert set(part["aug_index"]) == {0}
        # Image and ClassLabel features: PIL images and named labels, not bytes and bare integers
        assert isinstance(part.features["image"], datasets.Image)
        assert isinstance(part.features["label"], datasets.ClassLabel)
        assert part.features["label"].names == names
        first = part[0]
        assert isinstance(first["image"], PIL.Image.Image) and first["image"].size == (first["width"], first["height"])
        assert [part.features["label"].int2str(label) for label in part["label"]] == part["identity"]
    # the export's card declares the same features, and loading the directory through it agrees
    front = yaml.safe_load((dest / "README.md").read_text().split("---")[1])
    card = datasets.DatasetInfo._from_yaml_dict(front["dataset_info"]).features
    assert card == loaded["train"].features
    through_card = load_dataset(str(dest))
    assert through_card["test"].features == loaded["test"].features
    assert isinstance(through_card["test"][0]["image"], PIL.Image.Image)
    # the version's own shards, as the card's `configs` names them: every split, told by the `split` column
    shards = load_dataset("parquet", data_files=str(Path(product_store.store.version_dir("v2")) / "shards/*.parquet"))
    assert Counter(shards["train"]["split"]) == {s: n for s, n in product_store.store.get("v2").split_counts().items()}


def test_split_and_originals_only_select_samples(product_store: ProductStore, tmp_path: Path) -> None:
    dest = tmp_path / "test-only"
    summary = _export(product_store, dest, "imagefolder", splits=["test"], originals_only=True)
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == ["README.md", "labels.json", "test"]
    assert summary.samples == sum(_expected(product_store, "v2", originals_only=True)["test"].values())


@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset", "parquet"])
def test_a_killed_export_resumes_without_rewriting_finished_parts(product_store: ProductStore, tmp_path: Path,
                                                                  fmt: str) -> None:
    whole = tmp_path / "whole"
    _export(product_store, whole, fmt)
    shards = len(product_store.store.get("v2").shards)
    assert shards >= 4

    class Killed(Exception):
        pass

    seen = []

    def die_after_two(name: str, samples: int) -> None:
        seen.append(name)
        if len(seen) == 2:
            raise Killed

    dest = tmp_path / "resumed"
    with pytest.raises(Killed):
        _export(product_store, dest, fmt, on_shard=die_after_two)
    finished = _files(dest)
    assert finished and "labels.json" not in finished  # the labels and the card come last
    summary = _export(product_store, dest, fmt)
    assert summary.skipped == 2
    after = _files(dest)
    assert {k: v for k, v in after.items() if k in finished} == finished  # finished parts were not rewritten
    assert sorted(after) == sorted(_files(whole))  # the same files as an export never interrupted
    for name in after:
        if not name.endswith(".tar") and name != "README.md":  # tars carry no time; the card its own date
            assert (dest / name).read_bytes() == (whole / name).read_bytes(), name


def test_a_destination_holding_something_else_is_refused_untouched(product_store: ProductStore, tmp_path: Path,
                                                                   cli, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "used"
    _export(product_store, dest, "parquet")
    before = _files(dest)
    with pytest.raises(ConflictError, match="holds an export of v2"):
        _export(product_store, dest, "webdataset")
    assert _files(dest) == before
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", product_store.location.root)
    result = cli("datasets", "export", "v2", str(other), "--format", "imagefolder")
    assert "is not empty" in result.single_error_line()
    assert os.listdir(other) == ["notes.txt"]
    unknown = str(tmp_path / "x")
    assert "unknown split" in cli("datasets", "export", "v2", unknown, "--split", "dev").single_error_line()
    assert "unknown format" in cli("datasets", "export", "v2", unknown, "-f", "tfrecord").single_error_line()


def test_the_cli_exports_latest_and_says_what_it_did(product_store: ProductStore, tmp_path: Path, cli,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", product_store.location.root)
    code, out, err = cli("datasets", "export", "latest", str(tmp_path / "cli"), "--format", "webdataset",
                         "--split", "val")
    assert code == 0, err
    assert "exported v2 as webdataset" in out
    assert json.loads((tmp_path / "cli" / "labels.json").read_text())["splits"] == ["val"]


KILL_MID_SHARD = """
import os, signal, sys
from facescale.storage import DatasetStore, Location
from facescale.storage import export

batches = 0
real = export.iter_batches

def dying(*args, **kwargs):
    global batches
    for batch in real(*args, **kwargs):
        batches += 1
        if batches == 10:  # the third shard's second batch: SIGKILL, no clean-up runs
            os.kill(os.getpid(), signal.SIGKILL)
        yield batch

export.iter_batches = dying
store = DatasetStore(Location.from_uri(sys.argv[1]))
export.export_version(store, "v2", Location.from_uri(sys.argv[2]), sys.argv[3], batch_size=4)
"""


@pytest.mark.parametrize("fmt", ["imagefolder", "webdataset"])
def test_an_export_killed_mid_part_finishes_with_the_same_files(product_store: ProductStore, tmp_path: Path,
                                                                fmt: str) -> None:
    """SIGKILL inside a part (a file half written), then the same export again: the files of an uninterrupted one."""
    import signal
    import subprocess
    import sys

    dest = tmp_path / "killed"
    child = subprocess.run([sys.executable, "-c", KILL_MID_SHARD, product_store.location.root, str(dest), fmt],
                           capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert len(os.listdir(dest / STATE_DIR / "done")) == 2
    summary = _export(product_store, dest, fmt)
    assert summary.skipped == 2
    whole = tmp_path / "whole"
    _export(product_store, whole, fmt)
    assert sorted(_files(dest)) == sorted(_files(whole))
    for name in _files(dest):
        if name.endswith(".jpg"):
            assert (dest / name).read_bytes() == (whole / name).read_bytes()
    assert not list(dest.rglob("_tmp-*"))  # the half-written part's temporary file is gone


def test_an_unpublished_version_is_not_exported(tmp_path: Path) -> None:
    from facescale.storage import DatasetStore, ValidationSummary

    from .conftest import curated_row, identity_entries

    store = DatasetStore(Location.from_uri(str(tmp_path / "store")))
    rows = [curated_row(i) for i in range(4)]
    with store.create("v1", parent=None) as writer:
        writer.write(rows)
        writer.commit(identity_entries(rows))
    store.publish("v1", ValidationSummary(success=False, suite="s", failures=["counts"]))
    with pytest.raises(ConflictError, match="not published"):
        export_version(store, "v1", Location.from_uri(str(tmp_path / "out")), "parquet")
    assert not (tmp_path / "out").exists()


def test_an_unknown_split_or_format_is_refused_before_anything_is_written(product_store: ProductStore,
                                                                          tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        _export(product_store, tmp_path / "a", "parquet", splits=["train", "dev"])
    with pytest.raises(ValueError, match="unknown format 'tfrecord'"):
        _export(product_store, tmp_path / "b", "tfrecord")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
