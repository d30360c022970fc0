"""deploy/docker-compose.yml and what it mounts: Dockerfile, gateway config, nginx, Prometheus, Grafana."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from typing import Any

import pytest
import yaml

from gateway.config.load import load_config
from tests.deploy.prom import MISSING_REASON, find_binary
from tests.deploy.promql import DEPLOY, REPO

COMPOSE = DEPLOY / "docker-compose.yml"
REQUIRED_ENV = {"GATEWAY_ADMIN_KEY": "admin", "POSTGRES_PASSWORD": "pw", "GRAFANA_ADMIN_PASSWORD": "pw"}
GATEWAYS = ("gateway-a", "gateway-b")


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the YAML anchors and merge keys


def _compose_command() -> list[str] | None:
    """`docker compose` (the v2 plugin) or a v2 `docker-compose`; v1 predates the Compose Specification."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        out = subprocess.run([legacy, "version", "--short"], capture_output=True, text=True).stdout.strip()
        if out.lstrip("v").startswith("2."):
            return [legacy]
    return None


def _compose_interpolate(value: str, shell_env: dict[str, str]) -> str:
    """What compose puts in the container: `${VAR:-default}` and `${VAR:?error}` against `shell_env`."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if shell_env.get(name):
            return shell_env[name]
        if op == ":?":
            return "required-value"
        return arg or ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def test_docker_compose_accepts_the_compose_file() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2 here (`docker compose` plugin or docker-compose 2.x)")
    result = subprocess.run([*command, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, **REQUIRED_ENV})
    assert result.returncode == 0, result.stderr


def test_compose_runs_two_gateway_replicas_with_redis_postgres_prometheus_grafana_and_nginx() -> None:
    services = _compose()["services"]
    assert set(services) >= {*GATEWAYS, "redis", "postgres", "prometheus", "grafana", "nginx"}
    for name in GATEWAYS:
        gw = services[name]
        assert gw["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert "./gateway.compose.yaml:/etc/gateway/gateway.yaml:ro" in gw["volumes"]
        command = gw["command"]
        assert command[:3] == ["serve", "--config", "/etc/gateway/gateway.yaml"]
        assert command[command.index("--port") + 1] == "8080"
        assert {"redis", "postgres"} <= set(gw["depends_on"])


def test_the_multi_worker_replica_gets_a_metrics_directory() -> None:
    for name, svc in _compose()["services"].items():
        if "--workers" in svc.get("command", []):
            assert svc["environment"].get("PROMETHEUS_MULTIPROC_DIR"), name


def test_every_bind_mount_source_exists() -> None:
    for name, svc in _compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"


def test_compose_gateway_config_is_valid_with_the_environment_compose_passes() -> None:
    gw = _compose()["services"]["gateway-a"]
    env = {k: _compose_interpolate(str(v), {"POSTGRES_PASSWORD": "set"}) for k, v in gw["environment"].items()}
    config = load_config(DEPLOY / "gateway.compose.yaml", env=env)
    assert config.gateway.ledger_url == "postgresql://gateway:set@postgres:5432/gateway"
    assert config.gateway.redis_url == "redis://redis:6379/0"
    postgres_env = _compose()["services"]["postgres"]["environment"]
    assert (postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_DB"]) == ("gateway", "gateway")


def test_prometheus_scrapes_each_replica_directly_and_loads_the_alert_rules() -> None:
    compose = _compose()
    prom_cfg = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = [t for job in prom_cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert sorted(targets) == sorted(f"{name}:8080" for name in GATEWAYS)
    mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"] if v.startswith("./"))
    config_dir = os.path.dirname(mounts["./prometheus/prometheus.yml"])
    for rule_file in prom_cfg["rule_files"]:
        assert mounts[f"./prometheus/{rule_file}"] == f"{config_dir}/{rule_file}"


def test_prometheus_config_passes_promtool() -> None:
    promtool = find_binary("promtool")
    if promtool is None:
        pytest.skip(MISSING_REASON.format(name="promtool"))
    result = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus/prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_nginx_balances_both_replicas_without_buffering_streams() -> None:
    conf = (DEPLOY / "nginx/nginx.conf").read_text()
    servers = re.findall(r"^\s*server\s+([\w.-]+:\d+)", conf, re.M)
    assert sorted(servers) == sorted(f"{name}:8080" for name in GATEWAYS)
    assert re.search(r"proxy_buffering\s+off;", conf)
    # A POST that reached a replica is never replayed on another.
    assert not re.search(r"^\s*proxy_next_upstream\s[^;]*non_idempotent", conf, re.M)


def test_dockerfile_builds_a_slim_non_root_image_running_the_console_script() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.replace("\\\n", " ").splitlines() if ln.strip() and not ln.startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    assert froms and all(f == "python:3.11-slim" for f in froms)
    (user,) = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert user.split(":")[0] not in ("0", "root")
    assert any(ln.startswith("RUN") and "pip install ." in ln for ln in lines)
    (health,) = [ln for ln in lines if ln.startswith("HEALTHCHECK")]
    assert "/healthz" in health
    (entry,) = [ln for ln in lines if ln.startswith("ENTRYPOINT")]
    assert yaml.safe_load(entry.split(None, 1)[1]) == ["gateway"]
    (cmd,) = [ln for ln in lines if ln.startswith("CMD")]
    assert yaml.safe_load(cmd.split(None, 1)[1]) == [
        "serve", "--config", "/etc/gateway/gateway.yaml", "--host", "0.0.0.0", "--port", "8080"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "gateway" in scripts
    # Every file the build copies from the context exists (the context is the repository root).
    for ln in lines:
        if ln.startswith("COPY ") and "--from=" not in ln:
            for source in ln.split()[1:-1]:
                assert (REPO / source).exists(), source


def test_each_replica_spools_its_ledger_journal_to_a_persistent_volume_of_its_own() -> None:
    compose = _compose()
    gw = compose["services"]["gateway-a"]
    env = {k: _compose_interpolate(str(v), {"POSTGRES_PASSWORD": "set"}) for k, v in gw["environment"].items()}
    spool_dir = load_config(DEPLOY / "gateway.compose.yaml", env=env).gateway.spool_dir
    sources = []
    for name in GATEWAYS:
        mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"][name]["volumes"]}  # target: source
        assert spool_dir in mounts, name
        assert mounts[spool_dir] in compose["volumes"], name  # a named volume: it outlives the container
        sources.append(mounts[spool_dir])
    assert len(set(sources)) == len(GATEWAYS)
