"""`facescale identify | verify | calibrate` on a registered model, in this process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import run_cli
from .conftest import Served


@pytest.fixture
def store(served_base: Served, recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the served store (model already calibrated) as the CLI's storage root."""
    root = tmp_path / "store"
    shutil.copytree(served_base.root, root)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", str(root))
    monkeypatch.setenv("NO_COLOR", "1")
    return root


def test_identify_prints_json_and_writes_annotated_images(
    store: Path, served_base: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    two = served_base.two_people(tmp_path / "two.jpg")
    code, out, _ = run_cli(capsys, "identify", str(two), str(served_base.photo("Tony_Blair", 5)), "--json", "-k", "2",
                        "--annotate", str(tmp_path / "boxes"))
    assert code == 0
    doc = json.loads(out)
    assert [len(r["faces"]) for r in doc["results"]] == [2, 1]
    assert all(len(f["candidates"]) == 2 for r in doc["results"] for f in r["faces"])
    assert Path(doc["results"][0]["annotated"]).stat().st_size > 5_000
    code, out, _ = run_cli(capsys, "identify", two.name)  # relative (cwd: tmp_path): a short cell, never cut
    assert code == 0 and "unknown below" in out and "Colin Powell" in out  # a candidate in the table
    assert out.count("two.") == 2  # a row per face
    assert "dlib backend" in out  # the calibrated default answered, and the table says which
    assert doc["backend"] == "dlib" and {f["backend"] for r in doc["results"] for f in r["faces"]} == {"dlib"}
    # The held-apart photo (index 5 is past the version's 12) is its person, by the default backend.
    assert doc["results"][1]["faces"][0]["identity"] == "Tony Blair"


def test_verify_two_photos_and_an_identity(
    store: Path, served_base: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = served_base.photo("Colin_Powell", 50), served_base.photo("Colin_Powell", 51)
    code, out, _ = run_cli(capsys, "verify", str(a), str(b), "--backend", "dlib", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["same"] is True and doc["backend"] == "dlib" and doc["similarity"] >= doc["threshold"]
    code, out, _ = run_cli(capsys, "verify", str(a), "--identity", "Jacques Chirac", "-b", "dlib")
    assert code == 0 and "different people" in out and "Jacques Chirac (6 enrolled photos)" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["verify", "a.jpg"], "give two photos"),
        (["verify", "a.jpg", "b.jpg", "--identity", "X"], "exactly one photo"),
        (["verify", "a.jpg", "b.jpg", "--backend", "resnet"], "unknown backend 'resnet'"),
    ],
)
def test_usage_mistakes_are_one_error_line(
    store: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1


def test_a_missing_or_bad_photo_is_one_error_line(
    store: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, served_base: Served
) -> None:
    code, _, err = run_cli(capsys, "identify", str(tmp_path / "nope.jpg"))
    assert code == 2 and "cannot read" in err and "Traceback" not in err
    grey = tmp_path / "grey.txt"
    grey.write_text("not an image")
    code, _, err = run_cli(capsys, "verify", str(grey), str(served_base.photo("Tony_Blair", 1)))
    assert code == 2 and "not an image" in err


def test_calibrate_reports_and_stores(
    store: Path, served_base: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    unseen = tmp_path / "unseen"
    for person in ("Hans_Blix", "Kofi_Annan", "Naomi_Watts"):
        shutil.copytree(served_base.photos / person, unseen / person)
    code, out, err = run_cli(capsys, "calibrate", "latest", "--backends", "dlib", "--unseen", str(unseen),
                          "--max-pairs", "100")
    assert code == 0, err
    assert "unseen people" in out and "val pairs" in out and "identification (validation photos)" in out
    assert "dlib (default)" in out
    assert "unseen people: 3" in err
    code, out, _ = run_cli(capsys, "models", "show", "latest", "--json")
    calibration = json.loads(out)["metrics"]["calibration"]
    assert set(calibration["thresholds"]) == {"dlib"}
    assert calibration["report"]["unseen"]["people"] == 3


def test_facescale_serve_runs_the_api(store: Path, served_base: Served, recognizer) -> None:
    """The console script `facescale serve --port 0`: it binds a free port, loads the model, answers."""
    import os
    import re
    import subprocess
    import sys
    import time

    import httpx

    script = Path(sys.executable).with_name("facescale")
    env = {**os.environ, "FACESCALE_STORAGE__ROOT": str(store)}
    proc = subprocess.Popen([str(script), "serve", "--port", "0"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "facescale serve exited"
            found = re.search(r"running on (http://127\.0\.0\.1:\d+)", line)
            url = found.group(1) if found else None
            assert time.monotonic() < deadline
        while httpx.get(f"{url}/healthz", timeout=30).json()["status"] != "ok":
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.3)
        photo = served_base.photo("Tony_Blair", 5).read_bytes()
        answer = httpx.post(f"{url}/v1/identify", files={"image": photo}, timeout=120)  # first call traces the model
        assert answer.status_code == 200 and answer.json()["model_id"] == recognizer.model_id
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_an_uncalibrated_model_is_served_without_measuring_anything(
    store: Path, served_base: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Calibration belongs to registration: a model registered without one is served as it is (its
    softmax, a warning), and no query measures it; a bad photo is refused before any model work."""
    from facescale.storage import Location, ModelRegistry

    from .conftest import register_model

    location = Location.from_uri(str(store))
    fresh = register_model(location, tmp_path / "fresh-model", seed=1)  # registered, never calibrated
    bad = tmp_path / "notanimage.jpg"
    bad.write_text("not an image")
    for args in (["identify", str(bad)], ["verify", str(bad), str(bad)]):
        code, _, err = run_cli(capsys, *args, "--model", fresh)
        assert code == 2 and "not an image" in err
        assert len(err.strip().splitlines()) == 1, err
    code, out, err = run_cli(capsys, "identify", str(served_base.photo("Tony_Blair", 5)), "--model", fresh, "--json")
    assert code == 0 and json.loads(out)["backend"] == "model"
    assert "calibration" not in ModelRegistry(location).get(fresh).metrics


def _console(args: list[str], store: Path) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}, "FACESCALE_STORAGE__ROOT": str(store)}
    script = Path(sys.executable).with_name("facescale")
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=300)


TF_STARTUP = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard")


def test_tensorflow_start_up_lines_only_with_vv(store: Path, served_base: Served) -> None:
    """The console script loads TensorFlow for `identify` by our model: its C++ start-up lines are hidden
    unless -vv."""
    photo = str(served_base.photo("Tony_Blair", 5))
    quiet = _console(["identify", photo, "--json", "--backend", "model"], store)
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["results"][0]["faces"]
    assert not [line for line in quiet.stderr.splitlines() if any(t in line for t in TF_STARTUP)], quiet.stderr
    loud = _console(["-vv", "identify", photo, "--json", "--backend", "model"], store)
    assert loud.returncode == 0, loud.stderr
    assert "oneDNN custom operations" in loud.stderr


def test_serve_refuses_a_wider_interface_without_a_token(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond loopback the API answers whoever reaches it: refused (one line) unless serving.token is set."""
    monkeypatch.delenv("FACESCALE_SERVING__TOKEN", raising=False)
    line = cli("serve", "--host", "0.0.0.0").single_error_line()
    assert "without serving.token" in line and "0.0.0.0" in line
