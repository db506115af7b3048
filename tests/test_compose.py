"""docker-compose.yml and the Dockerfile, checked as files (no Docker engine runs here).

The stack follows Airflow's official docker-compose.yaml for the CeleryExecutor; its Celery settings
are the ones tests/airflow/test_celery.py runs (tests/celery_settings.py), its image is the locked
Airflow, its mounts exist, and every variable it uses is documented in README.md, "Docker compose".
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.celery_settings import (
    BROKER_SCHEME,
    EXECUTOR,
    RESULT_BACKEND_SCHEME,
    WORKER_CONCURRENCY,
    celery_env,
)
from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
)
ONE_SHOT = ("airflow-init", "loyalflow-seed")
ALL = ("postgres", "redis", "mailpit", "moto", *AIRFLOW_SERVICES, *ONE_SHOT)
INTERPOLATED = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")  # ${VAR...}, not the escaped $${VAR}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def locked(name: str) -> str:
    """The version constraints.txt pins for ``name``."""
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"constraints.txt pins no {name}")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment is written as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def test_parses_with_every_service_of_the_official_layout(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(ALL) <= set(services), sorted(set(ALL) - set(services))
    for name in AIRFLOW_SERVICES:
        assert services[name]["image"] == services["airflow-init"]["image"], name
        assert services[name]["build"] == ".", f"{name} runs the image built from the Dockerfile"


def test_long_running_services_have_healthchecks_and_dependencies_wait(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ALL:
        if name not in ONE_SHOT:
            assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        else:
            assert services[name].get("restart") == "no", f"{name} is one-shot"
    for name, service in services.items():
        for needed, rule in (service.get("depends_on") or {}).items():
            condition = rule["condition"]
            assert needed in services, f"{name} depends on unknown {needed}"
            if condition == "service_healthy":
                assert services[needed].get("healthcheck"), f"{name} waits for {needed}'s missing healthcheck"
            else:
                assert condition == "service_completed_successfully" and needed in ONE_SHOT, (name, needed)
    assert "loyalflow-seed" in services["airflow-worker"]["depends_on"], "no campaign on an empty warehouse"


def test_image_is_the_locked_airflow() -> None:
    froms = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M)
    assert len(froms) == 1, froms
    image, _, tag = froms[0].partition(":")
    assert image == "apache/airflow"
    assert tag.split("-")[0] == locked("apache-airflow"), f"Dockerfile {tag} vs constraints.txt"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "-c /opt/loyalflow/constraints.txt" in dockerfile, "the image installs the locked dependencies"


def test_moto_image_is_the_locked_moto(compose: dict[str, Any]) -> None:
    assert compose["services"]["moto"]["image"] == f"motoserver/moto:{locked('moto')}"


def bind_mounts(compose: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every host path mounted by a service, with the long-syntax options (empty for the short one)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for service in compose["services"].values():
        for volume in service.get("volumes") or []:
            if isinstance(volume, str):
                source = volume.split(":", 1)[0]
                if source.startswith((".", "/")):
                    found.append((source, {}))
            elif volume.get("type") == "bind":
                found.append((volume["source"], volume))
    return found


def test_every_mounted_host_path_exists(compose: dict[str, Any]) -> None:
    mounts = bind_mounts(compose)
    sources = {source for source, _ in mounts}
    assert {"./dags", "./plugins", "./campaigns", "./templates", "./out"} <= sources, sources
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    for source, options in mounts:
        if (options.get("bind") or {}).get("create_host_path"):
            # generated output: Docker creates it, git ignores it
            assert f"{Path(source).name}/" in ignored, f"{source} is created by Docker but not git-ignored"
        else:
            assert (ROOT / source).exists(), f"{source} is mounted but does not exist"


def used_variables(compose: dict[str, Any]) -> set[str]:
    """Variables set in any service's environment, and those the file takes from the host (${VAR})."""
    names = {name for service in compose["services"].values() for name in environment(service)}
    return names | set(INTERPOLATED.findall(COMPOSE.read_text(encoding="utf-8")))


def readme_section(title: str) -> str:
    """The README section under the heading ``title``, up to the next heading of its level or higher."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^(#+) {re.escape(title)}\s*$", text, re.M)
    assert match, f"README.md has no '{title}' section"
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def test_every_variable_is_documented_in_the_readme(compose: dict[str, Any]) -> None:
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", readme_section("Docker compose")))
    missing = sorted(used_variables(compose) - documented)
    assert not missing, f"not in README.md's 'Docker compose' table: {missing}"


SHARED_COMMENT = {"POSTGRES_PASSWORD": "POSTGRES_USER", "POSTGRES_DB": "POSTGRES_PASSWORD"}


def test_every_setting_has_a_comment(compose: dict[str, Any]) -> None:
    """Each environment entry has a comment line right above it (the postgres image's three share one)."""
    lines = [line.strip() for line in COMPOSE.read_text(encoding="utf-8").splitlines()]
    names = {name for service in compose["services"].values() for name in environment(service)}
    for name in sorted(names):
        numbers = [n for n, line in enumerate(lines) if line.startswith(f"{name}:")]
        assert numbers, name
        for number in numbers:
            above = lines[number - 1]
            shared = name in SHARED_COMMENT and above.startswith(f"{SHARED_COMMENT[name]}:")
            assert above.startswith("#") or shared, f"{name} (line {number + 1}) has no comment above it"


def test_celery_settings_are_the_ones_the_celery_test_runs(compose: dict[str, Any]) -> None:
    env = environment(compose["services"]["airflow-worker"])
    expected = celery_env(env["AIRFLOW__CELERY__BROKER_URL"], env["AIRFLOW__CELERY__RESULT_BACKEND"])
    assert {k: env.get(k) for k in expected} == expected
    assert env["AIRFLOW__CORE__EXECUTOR"] == EXECUTOR
    assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).scheme == BROKER_SCHEME
    assert urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"]).scheme == RESULT_BACKEND_SCHEME
    assert int(env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]) == WORKER_CONCURRENCY
    assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    assert urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"]).hostname == "postgres"
    for name in AIRFLOW_SERVICES:  # one configuration for the whole cluster
        assert environment(compose["services"][name]).items() >= expected.items(), name


def test_connections_point_at_the_local_stand_ins(compose: dict[str, Any]) -> None:
    env = environment(compose["services"]["airflow-worker"])
    smtp = json.loads(env["AIRFLOW_CONN_SMTP_DEFAULT"])
    assert (smtp["conn_type"], smtp["host"], smtp["port"]) == ("smtp", "mailpit", 1025)
    aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws["conn_type"] == "aws" and aws["extra"]["endpoint_url"] == "http://moto:5000"
    assert aws["extra"]["region_name"]
    assert any(port.endswith(":8025") for port in compose["services"]["mailpit"]["ports"]), "Mailpit UI"
    warehouse = env["AIRFLOW_CONN_" + env["LOYALFLOW_WAREHOUSE_CONN_ID"].upper()]
    assert urlsplit(warehouse).hostname == "postgres"
    assert "CREATE DATABASE warehouse" in (ROOT / "docker" / "create-warehouse.sql").read_text()
