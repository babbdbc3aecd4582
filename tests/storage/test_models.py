"""The model registry: register (files first, record last), list, get, latest, add files, fetch."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from facescale.errors import ConflictError, IntegrityError, ManifestError, NotFoundError
from facescale.storage import Location, ModelRegistry


def _output(tmp_path: Path, weights: bytes = b"weights-1") -> Path:
    out = tmp_path / "run"
    out.mkdir(exist_ok=True)
    (out / "model.keras").write_bytes(weights)
    (out / "labels.json").write_text('{"labels": {"0": "a"}}')
    (out / "sub").mkdir(exist_ok=True)
    (out / "sub" / "curve.png").write_bytes(b"\x89PNG fake")
    return out


def _register(registry: ModelRegistry, out: Path, **kw):
    weights = (out / "model.keras").read_bytes()
    return registry.register(
        out,
        ["model.keras", "labels.json", "sub/curve.png"],
        version_id="v1",
        num_classes=3,
        fingerprint=hashlib.sha256(weights).hexdigest(),
        config={"image_size": 75},
        metrics={"training": {"epochs": 2}},
        **kw,
    )


def test_register_list_get_latest_and_files(location: Location, tmp_path: Path, files_under) -> None:
    registry = ModelRegistry(location)
    assert registry.list() == [] and registry.latest() is None
    out = _output(tmp_path)
    record, created = _register(registry, out, model_id="m-1")
    assert created and record.model_id == "m-1" and record.version_id == "v1" and record.parent is None
    assert {f.path: f.bytes for f in record.files} == {"model.keras": 9, "labels.json": 22, "sub/curve.png": 9}
    assert record.file("model.keras").sha256 == hashlib.sha256(b"weights-1").hexdigest()
    assert registry.get("m-1") == record and registry.latest() == record
    assert files_under(location) == [
        "models/m-1/files/labels.json",
        "models/m-1/files/model.keras",
        "models/m-1/files/sub/curve.png",
        "models/m-1/model.json",
    ]
    stored = location.read_bytes(registry.files_dir("m-1") + "/sub/curve.png")
    assert stored == b"\x89PNG fake"

    # the same output again: the same record, nothing stored twice
    again, created = _register(registry, out)
    assert not created and again == record and registry.model_ids() == ["m-1"]

    child, _ = _register(registry, _output(tmp_path, b"weights-2"), model_id="m-2", parent="m-1")
    assert [r.model_id for r in registry.list()] == ["m-1", "m-2"]
    assert registry.latest() == child and registry.resolve("latest") == child and child.parent == "m-1"
    assert registry.resolve("m-1") == record


def test_unknown_models_bad_ids_parents_and_records(location: Location, tmp_path: Path) -> None:
    registry = ModelRegistry(location)
    with pytest.raises(NotFoundError, match="no models registered yet"):
        registry.resolve("latest")
    with pytest.raises(NotFoundError, match="unknown model 'nope'"):
        registry.get("nope")
    with pytest.raises(NotFoundError, match="invalid model id"):
        registry.get("../etc")
    out = _output(tmp_path)
    with pytest.raises(NotFoundError, match="unknown model 'ghost'"):
        _register(registry, out, parent="ghost")
    with pytest.raises(NotFoundError, match="no such file"):
        registry.register(out, ["missing.bin"], version_id="v1", num_classes=1, fingerprint="x")
    assert registry.list() == []  # nothing half-visible
    _register(registry, out, model_id="m-1")
    with pytest.raises(ConflictError, match="already registered"):
        _register(registry, _output(tmp_path, b"other"), model_id="m-1")
    location.write_bytes_atomic(registry.record_path("m-1"), b"{not json")
    with pytest.raises(ManifestError, match="malformed model record"):
        registry.get("m-1")


def test_add_files_replaces_the_prefix_and_merges_metrics(location: Location, tmp_path: Path) -> None:
    registry = ModelRegistry(location)
    _register(registry, _output(tmp_path), model_id="m-1")
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text('{"top1": 0.5}')
    (evaluation / "old.png").write_bytes(b"old")
    registry.add_files("m-1", evaluation, ["metrics.json", "old.png"], prefix="eval", metrics={"evaluation": 1})
    (evaluation / "metrics.json").write_text('{"top1": 0.75}')
    updated = registry.add_files("m-1", evaluation, ["metrics.json"], prefix="eval", metrics={"evaluation": 2})
    assert updated.metrics == {"training": {"epochs": 2}, "evaluation": 2}
    assert sorted(f.path for f in updated.files) == ["eval/metrics.json", "labels.json", "model.keras", "sub/curve.png"]
    assert registry.get("m-1") == updated
    assert json.loads(location.read_bytes(registry.files_dir("m-1") + "/eval/metrics.json")) == {"top1": 0.75}


def test_local_dir_is_the_store_itself_or_a_checked_download(location: Location, tmp_path: Path) -> None:
    registry = ModelRegistry(location)
    _register(registry, _output(tmp_path), model_id="m-1")
    local = registry.local_dir("m-1", tmp_path / "cache")
    assert (local / "model.keras").read_bytes() == b"weights-1"
    assert (local / "sub" / "curve.png").read_bytes() == b"\x89PNG fake"
    if location.is_local:
        assert local == Path(registry.files_dir("m-1"))
        return
    assert local == tmp_path / "cache" / "m-1"
    (local / "eval").mkdir()
    (local / "eval" / "feature_maps.png").write_bytes(b"a file the record no longer lists")
    assert registry.local_dir("m-1", tmp_path / "cache") == local
    assert not (local / "eval" / "feature_maps.png").exists()
    location.write_bytes_atomic(registry.files_dir("m-1") + "/labels.json", b"tampered")
    (local / "labels.json").unlink()
    with pytest.raises(IntegrityError, match="does not match its record"):
        registry.local_dir("m-1", tmp_path / "cache")


def test_a_register_killed_before_its_record_leaves_nothing_visible(tmp_path: Path) -> None:
    root = tmp_path / "store"
    out = _output(tmp_path)
    script = textwrap.dedent(
        f"""
        import os, signal
        from facescale.storage import Location, ModelRegistry
        from facescale.storage import fs

        original = fs.Location.write_bytes_atomic
        def die_at_record(self, path, data):
            if path.endswith("model.json"):
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, path, data)
        fs.Location.write_bytes_atomic = die_at_record
        ModelRegistry(Location.from_uri({str(root)!r})).register(
            {str(out)!r}, ["model.keras", "labels.json"], version_id="v1", num_classes=3,
            fingerprint="f", model_id="m-1",
        )
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    registry = ModelRegistry(Location.from_uri(str(root)))
    assert (root / "models" / "m-1" / "files" / "model.keras").is_file()  # the files got there
    assert registry.list() == [] and registry.latest() is None and registry.uncommitted() == ["m-1"]
    _, created = _register(registry, out, model_id="m-1")  # a rerun clears and redoes it
    assert created and registry.model_ids() == ["m-1"]
    stored = sorted(p.name for p in (root / "models" / "m-1" / "files").iterdir())
    assert stored == ["labels.json", "model.keras", "sub"]
