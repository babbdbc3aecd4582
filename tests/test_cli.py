"""The `facescale` command line: real entry point, output formats and the bad-input contract.

The contract: an expected failure exits non-zero with exactly one ``error: ...`` line on
stderr, never a traceback, and leaves the storage tree byte-for-byte as it was.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from PIL import Image

from facescale.storage import DatasetStore, ExclusionList, IdentityEntry, Location, Manifest

from .helpers import Result

BIN = Path(sys.executable).parent
SCRIPT = shutil.which("facescale", path=str(BIN))
ENTRY = [SCRIPT] if SCRIPT else [sys.executable, "-m", "facescale.app.cli"]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file (sha256) and directory under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESCALE_")}
    env.update(FACESCALE_STORAGE__ROOT=str(root), NO_COLOR="1", **extra)
    return env


def run_real(args: list[str], root: Path, cwd: Path, **env: str) -> Result:
    """The installed console script in a fresh process."""
    proc = subprocess.run(
        [*ENTRY, *args], cwd=cwd, env=_env(root, **env), capture_output=True, text=True, timeout=60
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The storage root for in-process runs (the working directory is tmp_path: no ./facescale.yaml)."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", str(data))
    return data


def _jpeg(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (shade, 255 - shade, 128)).save(buf, format="JPEG")
    return buf.getvalue()


PEOPLE = [("Ada Lovelace", "ada-lovelace", 0), ("José Martí", "jose-marti", 1)]


@pytest.fixture
def version(root: Path) -> Iterator[str]:
    """One committed CURATED version: two identities, 3 rows each (train, train, val)."""
    store = DatasetStore(Location.from_uri(str(root)))
    rows = []
    for name, slug, label in PEOPLE:
        for i, split in enumerate(["train", "train", "val"]):
            source = hashlib.sha256(f"{slug}-{i}".encode()).hexdigest()
            rows.append(
                {
                    "sample_id": f"{source}-0",
                    "source_image_id": source,
                    "identity": name,
                    "identity_slug": slug,
                    "label": label,
                    "split": split,
                    "aug_index": 0,
                    "face_box": {"x": 1, "y": 2, "w": 90, "h": 90},
                    "image": _jpeg(40 * i + label),
                    "width": 96,
                    "height": 96,
                    "sharpness": 12.5,
                    "brightness": 128.0,
                    "contrast": 30.0,
                }
            )
    with store.create("20261123T180000Z-abc123", config={"seed": 0}) as writer:
        writer.write(rows)
        writer.commit(
            [IdentityEntry(name=n, slug=s, label=lb, counts={"train": 2, "val": 1}) for n, s, lb in PEOPLE]
        )
    yield "20261123T180000Z-abc123"


# -- real entry point ------------------------------------------------------------------------
def test_config_show_prints_yaml_with_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "conf.yaml"
    config.write_text("scraper: {workers: 8, retries: 5}\ntraining: {image_size: 128}\n")
    args = ["-c", str(config), "config", "show"]
    result = run_real(args, tmp_path / "data", tmp_path, FACESCALE_SCRAPER__WORKERS="7")
    assert (result.code, result.err) == (0, "")
    assert result.out.startswith(f"# config file: {config}\n")
    shown = yaml.safe_load(result.out)
    assert shown["storage"]["root"] == str(tmp_path / "data")  # env
    assert shown["scraper"]["workers"] == 7  # env beats the file
    assert shown["scraper"]["retries"] == 5  # file
    assert shown["training"]["image_size"] == 128  # file
    assert shown["curation"]["per_identity"] == 50  # default


def test_identities_round_trip_through_the_real_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = run_real(["identities", "add", "José Martí", "[bold]Ada[/]"], data, tmp_path)
    assert (added.code, added.err) == (0, "")
    assert added.out.splitlines() == [
        "added       0  jose-marti  José Martí",
        "added       1  bold-ada  [bold]Ada[/]",  # a name is text, never markup
    ]
    listed = run_real(["identities", "list", "--json"], data, tmp_path)
    assert [(i["name"], i["label"]) for i in json.loads(listed.out)] == [("José Martí", 0), ("[bold]Ada[/]", 1)]


@pytest.mark.parametrize(
    ("case", "args", "needle"),
    [
        ("malformed manifest", ["datasets", "list"], "malformed manifest"),
        ("unwritable root", ["identities", "add", "Ada"], "cannot access"),
        ("invalid env config", ["datasets", "list"], "$FACESCALE_SCRAPER__WORKERS"),
        ("markup in the message", ["identities", "remove", "[/]"], "unknown identity '[/]'"),
    ],
)
def test_bad_input_through_the_real_process(tmp_path: Path, case: str, args: list[str], needle: str) -> None:
    data, env = tmp_path / "data", {}
    if case == "malformed manifest":
        (data / "datasets" / "20261123T180000Z-abc123").mkdir(parents=True)
        (data / "datasets" / "20261123T180000Z-abc123" / "manifest.json").write_text("{junk")
    elif case == "unwritable root":
        (tmp_path / "afile").write_text("not a directory")
        data = tmp_path / "afile" / "data"
    elif case == "invalid env config":
        env["FACESCALE_SCRAPER__WORKERS"] = "-1"
    before = _snapshot(tmp_path)
    result = run_real(args, data, tmp_path, **env)
    assert result.code == 2
    assert needle in result.single_error_line()
    assert _snapshot(tmp_path) == before


def test_usage_errors_exit_non_zero_without_a_traceback(tmp_path: Path) -> None:
    result = run_real(["no-such-command"], tmp_path / "data", tmp_path)
    assert result.code == 2
    assert "Traceback" not in result.out + result.err
    assert "No such command 'no-such-command'" in result.err


# -- config ----------------------------------------------------------------------------------
def test_config_show_json(root: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESCALE_CURATION__SPLIT__TRAIN", "0.6")
    monkeypatch.setenv("FACESCALE_CURATION__SPLIT__VAL", "0.3")
    result = cli("config", "show", "--json")
    assert result.code == 0
    shown = json.loads(result.out)
    assert shown["storage"]["root"] == str(root)
    assert shown["curation"]["split"] == {"train": 0.6, "val": 0.3, "test": 0.1}


def test_config_show_masks_secrets(root: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 key and secret, the Grid's password in its URL and the API token are never printed."""
    monkeypatch.setenv("FACESCALE_STORAGE__STORAGE_OPTIONS", '{"key": "AKIDSECRET1", "secret": "S3SECRET2"}')
    monkeypatch.setenv("FACESCALE_SCRAPER__SELENIUM_GRID_URL", "http://facescale:GRIDSECRET3@hub:4444")
    monkeypatch.setenv("FACESCALE_SERVING__TOKEN", "TOKENSECRET4")
    result = cli("config", "show", "--json")
    assert result.code == 0
    for secret in ("AKIDSECRET1", "S3SECRET2", "GRIDSECRET3", "TOKENSECRET4"):
        assert secret not in result.out
    assert json.loads(result.out)["scraper"]["selenium_grid_url"] == "http://facescale:**********@hub:4444"


def test_config_show_without_a_file(root: Path, cli: Callable[..., Result]) -> None:
    result = cli("config", "show")
    assert result.code == 0
    assert result.out.startswith("# config file: none (defaults + environment)\n")
    assert yaml.safe_load(result.out)["storage"]["root"] == str(root)


# -- identities ------------------------------------------------------------------------------
def test_identities_add_list_remove(root: Path, cli: Callable[..., Result], tmp_path: Path) -> None:
    assert cli("identities", "list").out.strip() == "no identities registered"
    result = cli("identities", "add", "Ada Lovelace", "李小龍", "ada  LOVELACE")
    assert result.code == 0
    assert result.out.splitlines() == [
        "added       0  ada-lovelace  Ada Lovelace",
        "added       1  li-xiao-long  李小龍",
        "exists      0  ada-lovelace  Ada Lovelace",
    ]
    names = tmp_path / "names.txt"
    names.write_text("# new people\n\n  Grace Hopper  \nAda Lovelace\n# Not A Name\n\U0001f642\n", encoding="utf-8")
    result = cli("identities", "add", "--from-file", str(names), "Alan Turing")
    assert result.code == 0
    assert [line.split()[:2] for line in result.out.splitlines()] == [
        ["added", "2"],  # Alan Turing (arguments first)
        ["added", "3"],  # Grace Hopper
        ["exists", "0"],
        ["added", "4"],  # the emoji
    ]

    table = cli("identities", "list").out
    for name, slug in [("Ada Lovelace", "ada-lovelace"), ("Grace Hopper", "grace-hopper"), ("李小龍", "li-xiao-long")]:
        assert name in table and slug in table
    assert "Not A Name" not in table

    result = cli("identities", "remove", "li-xiao-long", "Alan Turing")
    assert result.code == 0
    assert result.out.splitlines() == ["removed     1  li-xiao-long  李小龍", "removed     2  alan-turing  Alan Turing"]

    active = json.loads(cli("identities", "list", "--json").out)
    assert [(i["label"], i["name"]) for i in active] == [(0, "Ada Lovelace"), (3, "Grace Hopper"), (4, "\U0001f642")]
    everyone = json.loads(cli("identities", "list", "--all", "--json").out)
    assert [(i["label"], i["status"]) for i in everyone] == [
        (0, "active"),
        (1, "removed"),
        (2, "removed"),
        (3, "active"),
        (4, "active"),
    ]
    assert "removed" in cli("identities", "list", "--all").out

    readd = cli("identities", "add", "Alan Turing")  # same label as before
    assert readd.out.split()[:2] == ["added", "2"]


def test_identities_add_needs_names(root: Path, cli: Callable[..., Result]) -> None:
    line = cli("identities", "add").single_error_line()
    assert "no names given" in line
    assert not root.exists()


def test_identities_add_with_an_invalid_name_writes_nothing(root: Path, cli: Callable[..., Result]) -> None:
    assert cli("identities", "add", "Ada").code == 0
    before = _snapshot(root)
    line = cli("identities", "add", "Bob", "   ").single_error_line()
    assert "empty" in line
    assert _snapshot(root) == before


def test_identities_add_from_a_missing_file(root: Path, cli: Callable[..., Result], tmp_path: Path) -> None:
    line = cli("identities", "add", "--from-file", str(tmp_path / "nope.txt")).single_error_line()
    assert "nope.txt" in line


# -- datasets --------------------------------------------------------------------------------
def test_datasets_list_when_empty(root: Path, cli: Callable[..., Result]) -> None:
    assert cli("datasets", "list").out.strip() == "no dataset versions yet"
    assert json.loads(cli("datasets", "list", "--json").out) == []
    assert "no dataset versions yet" in cli("datasets", "show", "latest").single_error_line()


def test_datasets_list_and_show(root: Path, cli: Callable[..., Result], version: str) -> None:
    table = cli("datasets", "list")
    assert table.code == 0
    [row] = [line for line in table.out.splitlines() if version in line]
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[0] == version and cells[2:7] == ["-", "2", "6", "1", "not validated"]

    listed = json.loads(cli("datasets", "list", "--json").out)
    assert [m["version_id"] for m in listed] == [version]
    assert "shards" not in listed[0] and "config" not in listed[0]
    assert [i["name"] for i in listed[0]["identities"]] == ["Ada Lovelace", "José Martí"]

    shown = cli("datasets", "show", version)
    assert shown.code == 0
    assert shown.out.splitlines()[0] == f"{version}  not validated"
    assert "6 rows in 1 shards; train 4, val 2, test 0" in shown.out
    assert "José Martí" in shown.out and "jose-marti" in shown.out
    assert "verified" not in shown.out
    assert cli("datasets", "show", "latest").out == shown.out


def test_datasets_show_json_is_the_manifest(root: Path, cli: Callable[..., Result], version: str) -> None:
    result = cli("datasets", "show", version, "--json")
    assert result.code == 0
    expected = DatasetStore(Location.from_uri(str(root))).get(version)
    assert Manifest.model_validate_json(result.out) == expected
    assert expected.rows == 6


def test_datasets_show_verify(root: Path, cli: Callable[..., Result], version: str) -> None:
    result = cli("datasets", "show", version, "--verify")
    assert (result.code, result.err) == (0, "")
    assert "all shards verified" in result.out

    [shard] = (root / "datasets" / version / "shards").glob("*.parquet")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    before = _snapshot(root)
    line = cli("datasets", "show", version, "--verify").single_error_line()
    assert "checksum mismatch" in line and shard.name in line
    assert _snapshot(root) == before


# -- the bad-input contract, in process ------------------------------------------------------
def _malformed(root: Path, version: str) -> None:
    (root / "datasets" / version / "manifest.json").write_bytes(b"\x00junk{")


@pytest.mark.parametrize(
    ("args", "prepare", "needle"),
    [
        (["datasets", "show", "20990101T000000Z-ffffff"], None, "unknown dataset version"),
        (["datasets", "show", "../../etc"], None, "invalid dataset version id"),
        (["datasets", "show", "{version}"], _malformed, "malformed manifest"),
        (["datasets", "show", "{version}", "--verify"], _malformed, "malformed manifest"),
        (["datasets", "list"], _malformed, "malformed manifest"),
        (["identities", "remove", "Nobody"], None, "unknown identity 'Nobody'"),
        (["identities", "add", "Eve\x07"], None, "control"),
    ],
)
def test_bad_input_is_one_error_line_and_changes_nothing(
    root: Path,
    cli: Callable[..., Result],
    version: str,
    tmp_path: Path,
    args: list[str],
    prepare: Callable[[Path, str], None] | None,
    needle: str,
) -> None:
    if prepare is not None:
        prepare(root, version)
    before = _snapshot(tmp_path)
    result = cli(*(a.format(version=version) for a in args))
    assert result.code == 2
    assert needle in result.single_error_line()
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("args", [["identities", "add", "Ada"], ["identities", "remove", "Ada"]])
def test_a_root_under_a_regular_file(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", str(tmp_path / "afile" / "data"))
    before = _snapshot(tmp_path)
    line = cli(*args).single_error_line()
    assert "afile" in line or "unknown identity" in line
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("args", [["identities", "add", "Ada"], ["ingest", "{photos}", "--min-images", "1"]])
def test_a_root_that_cannot_be_created(tmp_path: Path, args: list[str]) -> None:
    """A root under /proc (no directory can be made there): one error line naming it, nothing written."""
    photos = tmp_path / "photos" / "Ada"
    photos.mkdir(parents=True)
    Image.new("RGB", (64, 64), (90, 120, 200)).save(photos / "a.jpg")
    before = _snapshot(tmp_path)
    args = [a.format(photos=photos.parent) for a in args]
    result = run_real(args, Path("/proc/facescale-nope/data"), cwd=tmp_path)
    assert result.code == 2
    line = result.single_error_line()
    assert "cannot create /proc/facescale-nope/data" in line
    assert _snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_root(cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", str(locked / "data"))
    locked.chmod(0o500)
    try:
        before = _snapshot(tmp_path)
        line = cli("identities", "add", "Ada").single_error_line()
        assert "cannot access" in line and "Permission denied" in line
        assert _snapshot(tmp_path) == before
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    ("env", "yaml_text", "needle"),
    [
        ({"FACESCALE_SCRAPER__WORKERS": "-1"}, None, "scraper.workers"),
        ({"FACESCALE_CURATION__SPLIT__TRAIN": "0.9"}, None, "$FACESCALE_CURATION__SPLIT__TRAIN"),
        ({"FACESCALE_STORAGE__STORAGE_OPTIONS": "{oops"}, None, "$FACESCALE_STORAGE__STORAGE_OPTIONS"),
        ({}, "scraper:\n  wrokers: 2\n", "scraper.wrokers"),
        ({}, "curation:\n  split: {train: 0.5, val: 0.1, test: 0.1}\n", "add up to 1"),
        ({}, "scraper: [unclosed\n", "not valid YAML"),
        ({}, "- a list\n", "must hold a mapping"),
    ],
)
def test_invalid_config_is_one_error_line_and_changes_nothing(
    root: Path,
    cli: Callable[..., Result],
    version: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    yaml_text: str | None,
    needle: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = ["identities", "add", "Ada"]
    if yaml_text is not None:
        (tmp_path / "bad.yaml").write_text(yaml_text)
        args = ["--config", str(tmp_path / "bad.yaml"), *args]
    before = _snapshot(tmp_path)
    line = cli(*args).single_error_line()
    assert needle in line
    assert line.count("error:") == 1
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bogus"], "No such command 'bogus'"),
        (["datasets", "show"], "Missing argument 'VERSION'"),
        (["identities", "list", "--nope"], "No such option: --nope"),
        (["datasets"], "Usage: "),  # no subcommand: help, non-zero
    ],
)
def test_usage_errors_in_process(root: Path, cli: Callable[..., Result], args: list[str], needle: str) -> None:
    result = cli(*args)
    assert result.code == 2
    assert needle in result.out + result.err
    assert "Traceback" not in result.out + result.err
    assert not root.exists()


def test_help_and_version_exit_zero(root: Path, cli: Callable[..., Result]) -> None:
    result = cli("--help")
    assert result.code == 0 and "identities" in result.out
    result = cli("version")
    assert result.code == 0 and result.out.strip()


# -- curate / validate -----------------------------------------------------------------------
def test_validate_publishes_a_consistent_version(cli: Callable[..., Result], root: Path, version: str) -> None:
    result = cli("validate", version)
    assert result.code == 0, result.err
    assert "validation: passed, published" in result.out
    assert DatasetStore(Location.from_uri(str(root))).get(version).published
    docs = next(line for line in result.out.splitlines() if line.startswith("data docs: "))
    assert Path(docs.removeprefix("data docs: ")).is_file()


def test_validate_refuses_unknown_versions_in_one_line(cli: Callable[..., Result], root: Path, version: str) -> None:
    before = _snapshot(root)
    assert "unknown dataset version 'nope'" in cli("validate", "nope").single_error_line()
    assert _snapshot(root) == before


def test_validate_latest_without_versions(cli: Callable[..., Result], root: Path) -> None:
    assert "no dataset versions yet" in cli("validate", "latest").single_error_line()


def test_curate_with_nothing_scraped_says_so(cli: Callable[..., Result], root: Path) -> None:
    result = cli("curate")
    assert result.code == 0, result.err
    assert "prepared 0 photos from 0 new RAW shards" in result.out
    assert "no identity has 30 clean crops yet" in result.out


def test_exclusions_add_keep_list_remove(cli: Callable[..., Result], root: Path) -> None:
    assert cli("identities", "add", "Ada Lovelace").code == 0
    assert cli("exclusions", "list").out.strip() == "no exclusions"
    result = cli("exclusions", "add", "Ada Lovelace", "aaa", "bbb", "--reason", "not her")
    assert result.code == 0 and "2 of 2 photos newly excluded" in result.out
    assert cli("exclusions", "keep", "ada-lovelace", "bbb").code == 0
    listed = cli("exclusions", "list", "Ada Lovelace").out
    assert "not her" in listed and "reviewed_keep" in listed
    excluded = ExclusionList(Location.from_uri(str(root)))
    assert excluded.excluded("ada-lovelace") == {"aaa"} and excluded.reviewed_keep("ada-lovelace") == {"bbb"}
    assert {e.added_by for e in excluded.load()} == {getpass.getuser()}
    # undo the keep: bbb is excluded again, as "not her"
    assert "bbb: back to not her (manual)" in cli("exclusions", "undo", "Ada Lovelace", "bbb").out
    assert excluded.excluded("ada-lovelace") == {"aaa", "bbb"}
    assert "2 entries removed" in cli("exclusions", "remove", "Ada Lovelace", "aaa", "bbb").out
    assert "no manual decision" in cli("exclusions", "undo", "Ada Lovelace", "aaa").single_error_line()
    assert "unknown identity 'Nobody'" in cli("exclusions", "add", "Nobody", "x").single_error_line()


def test_runs_list_json_gives_the_records_with_their_meta(
    cli: Callable[..., Result], root: Path, tmp_path: Path
) -> None:
    photos = tmp_path / "photos" / "Ada_Lovelace"
    photos.mkdir(parents=True)
    Image.new("RGB", (96, 96), (10, 200, 30)).save(photos / "a.jpg")
    assert cli("ingest", str(photos.parent), "--run-id", "r1").code == 0
    result = cli("runs", "list", "--json")
    assert result.code == 0
    (record,) = json.loads(result.out)
    assert record["run_id"] == "r1" and record["finished"]
    assert record["rows"] == 1 and record["shards"] == 1  # counts, as the table shows them
    assert record["meta"]["engine"] == "local"
