"""Configuration: defaults < YAML file < FACESCALE_* environment, validated with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from facescale.config import Settings, config_path, load_settings
from facescale.errors import ConfigError


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory, so no ./facescale.yaml leaks in (FACESCALE_* is cleared by conftest)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _yaml(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _one_line_error(path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


def test_defaults_are_valid() -> None:
    settings = load_settings()
    assert settings == Settings()
    assert config_path() is None
    assert settings.storage.root == "./facescale-data"
    assert settings.scraper.workers == 4
    split = settings.curation.split
    assert abs(split.train + split.val + split.test - 1) < 1e-9
    assert settings.curation.min_per_identity <= settings.curation.per_identity
    assert settings.training.image_size >= 75
    assert Settings.model_validate(settings.dump()) == settings  # the dump round-trips


def test_yaml_values_apply_and_the_rest_keeps_its_defaults(tmp_path: Path) -> None:
    path = _yaml(
        tmp_path,
        """
storage:
  root: /data/faces
scraper:
  workers: 8
  selenium_grid_url: http://grid:4444/wd/hub
curation:
  split: {train: 0.8, val: 0.1, test: 0.1}
training:
  mixed_precision: "off"
""",
    )
    settings = load_settings(path)
    assert settings.storage.root == "/data/faces"
    assert settings.scraper.workers == 8
    assert settings.scraper.selenium_grid_url == "http://grid:4444/wd/hub"
    assert (settings.curation.split.train, settings.curation.split.val) == (0.8, 0.1)
    assert settings.training.mixed_precision == "off"
    assert settings.scraper.per_keyword == 100  # untouched default
    assert settings.curation.per_identity == 50


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_yaml_file_means_defaults(tmp_path: Path, text: str) -> None:
    assert load_settings(_yaml(tmp_path, text)) == Settings()


def test_the_yaml_file_is_found_by_env_or_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _yaml(tmp_path, "scraper: {workers: 3}\n", name="facescale.yaml")
    assert config_path() == Path("facescale.yaml")
    assert load_settings().scraper.workers == 3

    other = _yaml(tmp_path, "scraper: {workers: 5}\n", name="other.yaml")
    monkeypatch.setenv("FACESCALE_CONFIG", str(other))
    assert load_settings().scraper.workers == 5
    explicit = _yaml(tmp_path, "scraper: {workers: 6}\n", name="explicit.yaml")
    assert load_settings(explicit).scraper.workers == 6  # --config beats $FACESCALE_CONFIG


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _yaml(tmp_path, "storage: {root: /from/yaml}\nscraper: {workers: 8, retries: 5}\n")
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", "s3://bucket/faces")
    monkeypatch.setenv("FACESCALE_SCRAPER__WORKERS", "2")
    monkeypatch.setenv("FACESCALE_TRAINING__IMAGE_SIZE", "128")
    settings = load_settings(path)
    assert settings.storage.root == "s3://bucket/faces"
    assert settings.scraper.workers == 2
    assert settings.scraper.retries == 5  # the YAML's other keys in that section survive
    assert settings.training.image_size == 128


def test_nested_env_keys_merge_with_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _yaml(tmp_path, "curation:\n  split: {train: 0.8, val: 0.1, test: 0.1}\n  per_identity: 40\n")
    monkeypatch.setenv("FACESCALE_CURATION__SPLIT__TRAIN", "0.6")
    monkeypatch.setenv("FACESCALE_CURATION__SPLIT__VAL", "0.3")
    settings = load_settings(path)
    assert (settings.curation.split.train, settings.curation.split.val, settings.curation.split.test) == (
        0.6,
        0.3,
        0.1,
    )
    assert settings.curation.per_identity == 40


def test_env_values_for_dicts_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESCALE_STORAGE__STORAGE_OPTIONS", '{"anon": true, "endpoint_url": "http://s3:9000"}')
    options = load_settings().storage.storage_options
    assert options == {"anon": True, "endpoint_url": "http://s3:9000"}


# -- invalid values: ConfigError, one line, naming the key (and where it came from) ----------
def test_a_negative_worker_count_from_yaml(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "scraper:\n  workers: -3\n")
    message = _one_line_error(path)
    assert message.startswith("invalid configuration: scraper.workers:")
    assert "-3" in message and str(path) in message


def test_a_negative_worker_count_from_env_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _yaml(tmp_path, "scraper:\n  workers: 8\n")
    monkeypatch.setenv("FACESCALE_SCRAPER__WORKERS", "-1")
    message = _one_line_error(path)
    assert "scraper.workers" in message
    assert "$FACESCALE_SCRAPER__WORKERS" in message
    assert str(path) not in message  # the bad value did not come from the file


def test_lower_case_env_names_are_named_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("facescale_scraper__workers", "0")  # pydantic-settings is case-insensitive
    assert "facescale_scraper__workers" in _one_line_error()


def test_split_fractions_must_add_up_to_one(tmp_path: Path) -> None:
    message = _one_line_error(_yaml(tmp_path, "curation:\n  split: {train: 0.8, val: 0.3, test: 0.1}\n"))
    assert "curation.split" in message and "add up to 1" in message


def test_a_split_broken_by_env_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _yaml(tmp_path, "curation:\n  split: {train: 0.8, val: 0.1, test: 0.1}\n")
    monkeypatch.setenv("FACESCALE_CURATION__SPLIT__TRAIN", "0.5")
    message = _one_line_error(path)
    assert "curation.split" in message and "add up to 1" in message
    assert "$FACESCALE_CURATION__SPLIT__TRAIN" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("scraper:\n  wrokers: 4\n", "scraper.wrokers"),  # a typo
        ("scrapper:\n  workers: 4\n", "scrapper"),
        ("training:\n  image_size: 8\n", "training.image_size"),
        ("training:\n  image_size: 32\n", "training"),  # the tiny backbone takes it, Inception V3 not
        ("training:\n  backbone: resnet\n", "training.backbone"),
        ("training:\n  mixed_precision: maybe\n", "training.mixed_precision"),
        ("serving:\n  port: http\n", "serving.port"),
        ("storage:\n  root: '  '\n", "storage.root"),
        ("storage:\n  rows_per_row_group: 9000\n  max_rows_per_shard: 100\n", "storage"),
        ("curation:\n  min_per_identity: 60\n", "curation"),
        ("scraper: 5\n", "scraper"),
    ],
)
def test_invalid_yaml_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = _yaml(tmp_path, text)
    message = _one_line_error(path)
    assert message.startswith(f"invalid configuration: {key}:")
    assert f"[from {path}]" in message


def test_an_empty_root_from_env_names_key_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESCALE_STORAGE__ROOT", " ")
    message = _one_line_error()
    assert message.startswith("invalid configuration: storage.root:")
    assert "$FACESCALE_STORAGE__ROOT" in message


def test_an_unknown_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESCALE_SCRAPER__WROKERS", "4")
    message = _one_line_error()
    assert "scraper.wrokers" in message and "$FACESCALE_SCRAPER__WROKERS" in message


def test_env_json_that_does_not_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESCALE_STORAGE__STORAGE_OPTIONS", "{not json")
    message = _one_line_error()
    assert message.startswith("invalid configuration:")
    assert "storage" in message and "$FACESCALE_STORAGE__STORAGE_OPTIONS" in message


@pytest.mark.parametrize("text", ["- storage\n- scraper\n", "just a string\n", "42\n"])
def test_yaml_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = _yaml(tmp_path, text)
    assert _one_line_error(path) == f"config file {path} must hold a mapping of sections"


def test_yaml_with_non_text_section_names(tmp_path: Path) -> None:
    message = _one_line_error(_yaml(tmp_path, "1: {workers: 2}\n"))
    assert "section names must be text" in message and "1" in message


def test_bad_yaml_syntax_names_the_line(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "scraper:\n  workers: 4\n  engine: [demo\n")
    message = _one_line_error(path)
    assert message.startswith(f"config file {path} is not valid YAML (line ")


def test_a_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _one_line_error(tmp_path / "nope.yaml") == f"config file not found: {tmp_path / 'nope.yaml'}"
    monkeypatch.setenv("FACESCALE_CONFIG", "missing.yaml")
    assert _one_line_error() == "config file not found: missing.yaml"


def test_an_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "adir.yaml").mkdir()
    assert _one_line_error(tmp_path / "adir.yaml").startswith("cannot read config file")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"scraper:\n  engine: caf\xe9\n")
    assert _one_line_error(bad).startswith("cannot read config file")


def test_several_bad_values_are_reported_together(tmp_path: Path) -> None:
    message = _one_line_error(_yaml(tmp_path, "scraper: {workers: 0, retries: -1}\n"))
    assert "scraper.workers" in message and "scraper.retries" in message


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.scraper.workers = 9  # type: ignore[misc]
