"""docker-compose.kafka.yml, infra/prometheus.yml and the Dockerfile agree with each other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.kafka.yml"
PROMETHEUS = ROOT / "infra" / "prometheus.yml"
DOCKERFILE = ROOT / "Dockerfile"
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "API_KEY", "APIKEY", "CREDENTIAL")
REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?+])[^}]*)?\}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):  # ["KEY=value", ...]
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def container_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for item in service.get("ports", []) + service.get("expose", []):
        if isinstance(item, dict):
            ports.add(int(item["target"]))
        else:
            ports.add(int(str(item).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def depends(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {name: "service_started" for name in raw}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def test_services_exist(compose: dict[str, Any]) -> None:
    assert {"kafka", "clickhouse", "worker", "prometheus"} <= set(compose["services"])


def test_kafka_is_single_node_kraft_without_auto_create(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:3.9")
    e = env(kafka)
    assert e["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"
    assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert e["KAFKA_NODE_ID"]
    assert "PLAINTEXT://:9092" in e["KAFKA_LISTENERS"]
    assert "CONTROLLER://:9093" in e["KAFKA_LISTENERS"]
    assert "PLAINTEXT://kafka:9092" in e["KAFKA_ADVERTISED_LISTENERS"]
    assert e["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{e['KAFKA_NODE_ID']}@kafka:9093"
    assert kafka["healthcheck"]["test"]


def test_clickhouse_has_health_and_password_from_env(compose: dict[str, Any]) -> None:
    ch = compose["services"]["clickhouse"]
    assert ch["image"].startswith("clickhouse/clickhouse-server")
    assert 8123 in container_ports(ch)
    assert "/ping" in " ".join(ch["healthcheck"]["test"])
    assert REFERENCE.match(env(ch)["CLICKHOUSE_PASSWORD"])


def test_worker_points_at_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker = services["worker"]
    e = env(worker)
    assert e["REVIEWBUS_KAFKA"] == "kafka:9092"
    dsn = urlsplit(e["REVIEWBUS_CLICKHOUSE"])
    assert dsn.hostname == "clickhouse"
    assert dsn.port in container_ports(services["clickhouse"])
    assert dsn.password is None  # the password travels separately
    assert REFERENCE.match(e["REVIEWBUS_CLICKHOUSE_PASSWORD"])
    assert e["REVIEWBUS_WEB_HOST"] == "0.0.0.0"
    assert depends(worker) == {"kafka": "service_healthy", "clickhouse": "service_healthy"}
    assert worker["build"] == "." or worker["build"]["context"] == "."
    assert int(worker["deploy"]["replicas"]) >= 1


def test_prometheus_scrapes_the_worker_web_port(compose: dict[str, Any]) -> None:
    worker_port = int(env(compose["services"]["worker"])["REVIEWBUS_WEB_PORT"])
    prom = compose["services"]["prometheus"]
    assert prom["image"].startswith("prom/prometheus")
    mounts = [str(v).split(":") for v in prom["volumes"]]
    assert any(Path(src) == Path("./infra/prometheus.yml") for src, *_ in mounts)

    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    targets: list[str] = []
    for job in config["scrape_configs"]:
        if job.get("metrics_path", "/metrics") != "/metrics":
            continue
        for static in job.get("static_configs", []):
            targets += static["targets"]
        for dns in job.get("dns_sd_configs", []):
            targets += [f"{name}:{dns['port']}" for name in dns["names"]]
    assert f"worker:{worker_port}" in targets


def test_no_literal_secrets(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in env(service).items():
            if any(word in key.upper() for word in SECRET_WORDS):
                assert REFERENCE.match(value), f"{name}.{key} must be a ${{...}} reference"
    text = COMPOSE.read_text(encoding="utf-8")
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "credentials in a URL"


def test_dockerfile_installs_and_runs_the_worker() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r"pip install (?:--no-cache-dir )?\.(?:\s|$)", text)
    (cmd,) = re.findall(r"^CMD\s+(.+)$", text, re.MULTILINE)
    assert cmd.strip() in ('["reviewbus", "worker"]', "reviewbus worker")
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".git" in ignore and ".venv" in ignore
