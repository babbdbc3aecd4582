"""docker/compose.yaml against the Compose specification (no Docker engine needed).

The file is interpolated the way `docker compose` does it (``${VAR}``, ``${VAR:-default}``,
``${VAR:?error}``, ``$$``) with docker/example.env, then parsed and validated by compose-spec
(the Rust compose_spec parser: unknown keys, wrong types and bad references are errors).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: unset or empty with ``:-`` takes the default; ``:?`` fails."""

    def value(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        current = env.get(name)
        if op in (":-", "-"):
            return current if current or (op == "-" and current is not None) else arg
        if op in (":?", "?") and not current:
            raise KeyError(f"{name}: {arg}")
        return current or ""

    return VARIABLE.sub(value, text)


def _env(**extra: str) -> dict[str, str]:
    env = {}
    for line in (DOCKER / "example.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, val = line.partition("=")
            env[key.strip()] = val.split("#")[0].strip()
    env.update(AIRFLOW_FERNET_KEY="x" * 44, AIRFLOW_JWT_SECRET="y" * 32, **extra)
    return env


def validate(text: str) -> dict[str, Any]:
    """YAML (anchors and ``<<`` merge keys resolved, as Compose does) checked against the specification."""
    loaded = yaml.safe_load(text)
    PyCompose.from_json(json.dumps(loaded)).validate()
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return validate(interpolate((DOCKER / "compose.yaml").read_text(), _env()))


def test_compose_file_follows_the_specification(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "minio", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer", "airflow-worker", "ray-head", "ray-worker", "selenium-hub", "chromium",
                 "trainer"):
        assert name in services, name


def test_each_role_has_its_image_with_its_extras(compose: dict[str, Any]) -> None:
    services = compose["services"]
    extras = {
        name: set(services[name]["build"]["args"]["EXTRAS"].split(","))
        for name in ("airflow-scheduler", "airflow-worker", "trainer", "ray-head", "demo-web")
    }
    assert extras == {
        "airflow-scheduler": {"airflow", "scaled"},  # parses and schedules: no stage library
        "airflow-worker": {"scrape", "curate", "airflow", "scaled"},
        "trainer": {"train", "serve", "airflow", "scaled", "gpu"},  # registration calibrates (serving's backends)
        "ray-head": {"curate", "s3"},
        "demo-web": {"demo"},
    }
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert set().union(*extras.values()) <= set(pyproject["project"]["optional-dependencies"])
    assert services["ray-worker"]["image"] == services["ray-head"]["image"] == "facescale-ray:latest"
    control = {services[n]["image"] for n in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor")}
    assert control == {"facescale-airflow:latest"}
    devices = services["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert services["trainer"]["command"][-4:] == ["--queues", "gpu", "--concurrency", "1"]


def test_airflow_runs_on_postgres_celery_and_the_shared_services(compose: dict[str, Any]) -> None:
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert "AIRFLOW__CORE__EXECUTOR" not in env  # from deploy/roles.env (the next test)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:change-me@postgres/")
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert env["FACESCALE_STORAGE__ROOT"] == "s3://facescale/data"
    assert env["FACESCALE_CURATION__RAY_ADDRESS"] == "ray-head:6379"  # GCS: Ray Data does not run under ray://
    assert env["FACESCALE_SCRAPER__SELENIUM_GRID_URL"] == "http://selenium-hub:4444"
    assert '"endpoint_url": "http://minio:9000"' in env["FACESCALE_STORAGE__STORAGE_OPTIONS"]


def test_the_facescale_settings_of_the_compose_file_load(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from facescale.config import load_settings

    worker = compose["services"]["airflow-worker"]
    shared = (DOCKER / worker["env_file"][0]).read_text().splitlines()
    values = dict(line.split("=", 1) for line in shared if line.strip() and not line.startswith("#"))
    values.update(worker["environment"])  # compose: environment over env_file
    for key, value in values.items():
        if key.startswith("FACESCALE_"):
            monkeypatch.setenv(key, str(value))
    settings = load_settings()
    assert settings.storage.storage_options["client_kwargs"]["endpoint_url"] == "http://minio:9000"
    assert settings.orchestration.scrape_pool_slots == 4


def test_secrets_are_required_not_defaulted() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    env = _env()
    del env["POSTGRES_PASSWORD"]
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(text, env)


def test_the_validator_rejects_a_misspelt_key() -> None:
    text = interpolate((DOCKER / "compose.yaml").read_text(), _env()).replace("shm_size: 4gb", "shm_sise: 4gb", 1)
    with pytest.raises(ValueError, match="shm_sise"):
        validate(text)


def test_airflow_roles_read_the_settings_the_native_stack_proves(compose: dict[str, Any]) -> None:
    """deploy/roles.env is the one copy of the shared settings: compose's Airflow roles and cluster.sh read it."""
    roles = DOCKER.parent / "deploy" / "roles.env"
    settings = dict(
        line.split("=", 1) for line in roles.read_text().splitlines() if line.strip() and not line.startswith("#")
    )
    assert settings["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-worker", "trainer"):
        service = compose["services"][name]
        assert service["env_file"] == ["../deploy/roles.env"], name
        clash = {k for k in settings if k in service["environment"] and service["environment"][k] != settings[k]}
        assert not clash, (name, clash)  # compose's environment would override the shared value
    assert "deploy/roles.env" in (DOCKER.parent / "scripts" / "cluster.sh").read_text()
    worker = " ".join(compose["services"]["airflow-worker"]["command"])
    assert "ray start --address=ray-head:6379 --num-cpus=0" in worker and "airflow celery worker" in worker
