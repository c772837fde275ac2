"""docker-compose.yml (no Docker engine runs here): services, ports, secrets and settings it must have.

The file is read as Compose reads it after `cp deploy/compose.env.example .env`: `${VAR}`,
`${VAR:-default}` and `${VAR:?error}` are interpolated from the example env file.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from processor.settings import Settings

ROOT = Path(__file__).parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
PROCESSOR_SERVICES = ("worker", "backfill-worker", "migrate", "topics", "model-server")
_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as Compose reads an env file (comments and blank lines skipped)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution, recursively; a missing `:?` variable raises like Compose does."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if name is None:
            return "$"  # $$ escapes a dollar for the container's shell
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op is not None and op.endswith("?") and unset:
            raise KeyError(f"{name}: {arg}")
        if op is not None and op.endswith("-") and unset:
            return arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(raw_compose(), read_env_file(ENV_EXAMPLE))


def test_compose_has_the_production_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "postgres", "redis", "worker", "migrate", "topics", "prometheus"} <= services.keys()
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    worker = services["worker"]
    assert worker["build"] == "." and (ROOT / "Dockerfile").exists()
    assert worker["deploy"]["replicas"] >= 2
    env = worker["environment"]
    assert env["PROCESSOR_BROKER_URL"].endswith("kafka:9092")
    assert "@postgres:5432/" in env["PROCESSOR_POSTGRES_DSN"] and env["PROCESSOR_REDIS_URL"].startswith("redis://")
    assert "@redis:6379/" in env["PROCESSOR_REDIS_URL"]
    for dependency in ("kafka", "redis", "migrate", "topics"):
        assert dependency in worker["depends_on"]
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("service", PROCESSOR_SERVICES)
def test_processor_settings_are_ones_the_processor_reads(compose: dict[str, Any], service: str) -> None:
    env = compose["services"][service]["environment"]
    names = {k.removeprefix("PROCESSOR_").lower(): v for k, v in env.items() if k.startswith("PROCESSOR_")}
    unknown = sorted(f"PROCESSOR_{k.upper()}" for k in names if k not in Settings.model_fields)
    assert not unknown, f"compose sets variables no setting reads: {unknown}"
    settings = Settings.model_validate(names)
    assert settings.topic_partitions >= 2
    assert settings.metrics_port == 9100
    assert settings.create_topics is False  # the `topics` one-shot owns topic creation


def test_no_datastore_or_broker_port_on_public_interfaces() -> None:
    """Every published port binds to loopback; Kafka and the workers publish none."""
    services = raw_compose()["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            spec = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
            assert spec.startswith("127.0.0.1:"), f"{name} publishes {port!r} on every interface"
    assert "ports" not in services["kafka"] and "ports" not in services["worker"]


def test_credentials_come_from_the_env_file() -> None:
    """No password in docker-compose.yml: Postgres and Redis read .env, the DSNs interpolate it."""
    text = COMPOSE.read_text()
    example = read_env_file(ENV_EXAMPLE)
    for secret in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        assert example[secret] not in text
    services = raw_compose()["services"]
    for name in ("postgres", "redis", *PROCESSOR_SERVICES):
        assert services[name]["env_file"] == ".env", name
    assert "POSTGRES_PASSWORD" not in services["postgres"].get("environment", {})
    env = services["worker"]["environment"]
    assert "${POSTGRES_PASSWORD:?" in env["PROCESSOR_POSTGRES_DSN"]
    assert "${REDIS_PASSWORD:?" in env["PROCESSOR_REDIS_URL"]
    assert "$$REDIS_PASSWORD" in " ".join(services["redis"]["command"])  # the container's env, not argv in the file
    # Without .env, Compose stops with the hint instead of starting with empty passwords.
    with pytest.raises(KeyError, match=r"compose\.env\.example"):
        interpolate(raw_compose(), {})
    # The example names every variable the file reads, and .env stays out of git.
    referenced = {m["name"] for m in _VARIABLE.finditer(text) if m["name"]}
    assert referenced <= example.keys(), f"not in deploy/compose.env.example: {referenced - example.keys()}"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored or "/.env" in ignored


def test_topics_one_shot_uses_replication_and_retention_from_env(compose: dict[str, Any]) -> None:
    raw = raw_compose()["services"]["topics"]["environment"]
    assert raw["PROCESSOR_TOPIC_REPLICATION_FACTOR"].startswith("${TOPIC_REPLICATION_FACTOR")
    assert raw["PROCESSOR_TOPIC_RETENTION_MS"].startswith("${TOPIC_RETENTION_MS")
    topics = compose["services"]["topics"]
    assert topics["command"] == ["topics", "create"]
    assert topics["restart"] == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    example = read_env_file(ENV_EXAMPLE)
    assert topics["environment"]["PROCESSOR_TOPIC_REPLICATION_FACTOR"] == example["TOPIC_REPLICATION_FACTOR"]
    assert topics["environment"]["PROCESSOR_TOPIC_PARTITIONS"] == example["TOPIC_PARTITIONS"]


def test_worker_cpu_limit_matches_its_threads(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    cpus = float(worker["deploy"]["resources"]["limits"]["cpus"])
    env = worker["environment"]
    assert cpus == int(env["PROCESSOR_DECODE_THREADS"]) == int(env["TF_NUM_INTRAOP_THREADS"]) >= 1
    assert worker["deploy"]["resources"]["limits"]["memory"]
    # The same knob drives both in the raw file, so they cannot drift apart.
    raw = raw_compose()["services"]["worker"]
    assert raw["deploy"]["resources"]["limits"]["cpus"] == "${WORKER_CPUS:-2}"
    assert raw["environment"]["PROCESSOR_DECODE_THREADS"] == "${WORKER_CPUS:-2}"


def test_worker_is_hardened_and_drains_before_it_is_killed(compose: dict[str, Any]) -> None:
    for name in PROCESSOR_SERVICES:
        service = compose["services"][name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert any(t.startswith("/tmp") for t in service["tmpfs"]), name
    worker = compose["services"]["worker"]
    grace = worker["stop_grace_period"]
    assert grace.endswith("s")
    assert float(grace.removesuffix("s")) > float(worker["environment"]["PROCESSOR_SHUTDOWN_GRACE_S"]) + 5


class _Probe(BaseHTTPRequestHandler):
    status = 200
    path_ok = "/readyz"

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == self.path_ok else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_worker_healthcheck_passes_only_when_ready(compose: dict[str, Any], probe_server: HTTPServer) -> None:
    """The healthcheck command itself, run against a stand-in /readyz: exit 0 on 200, non-zero on 503."""
    worker = compose["services"]["worker"]
    check = worker["healthcheck"]
    assert check["test"][:3] == ["CMD", "python", "-c"]
    code = check["test"][3]
    port = worker["environment"]["PROCESSOR_METRICS_PORT"]
    assert f"http://127.0.0.1:{port}/readyz" in code
    code = code.replace(f":{port}/", f":{probe_server.server_address[1]}/")
    _Probe.path_ok = "/readyz"
    for status, ok in ((200, True), (503, False)):
        _Probe.status = status
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
        assert (result.returncode == 0) is ok, (status, result.stderr[-500:])
    assert check["start_period"]  # the model loads before /readyz can pass


def test_prometheus_scrapes_the_workers_with_the_alert_rules(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"] if v.startswith("./")}
    assert mounts["/etc/prometheus/alerts.yml"] == "./deploy/prometheus/alerts.yml"
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "listing-image-processor"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker", "backfill-worker"]
    assert sd["port"] == int(compose["services"]["worker"]["environment"]["PROCESSOR_METRICS_PORT"])


def test_backfill_has_a_worker_of_its_own_that_yields_the_cpu(compose: dict[str, Any]) -> None:
    """Daily workers take the input topic only; the backfill worker the backfill topic, at idle priority
    inside its container and with a tiny CPU weight against the daily workers' containers."""
    services = compose["services"]
    daily, backfill = (_settings(services[name]) for name in ("worker", "backfill-worker"))
    assert (daily.worker_role, daily.idle_cpu) == ("daily", False)
    assert (backfill.worker_role, backfill.idle_cpu) == ("backfill", True)
    assert backfill.consumed_topic == daily.backfill_topic and backfill.group_id != daily.group_id
    assert int(services["backfill-worker"]["cpu_shares"]) <= 16 and "cpu_shares" not in services["worker"]
    assert services["backfill-worker"]["deploy"]["resources"] == services["worker"]["deploy"]["resources"]
    assert services["backfill-worker"]["healthcheck"] == services["worker"]["healthcheck"]


def _settings(service: dict[str, Any]) -> Settings:
    env = service["environment"]
    return Settings.model_validate(
        {k.removeprefix("PROCESSOR_").lower(): v for k, v in env.items() if k.startswith("PROCESSOR_")}
    )


# ---------------------------------------------------------------------------------------------------
# The model server (issue #24): opt-in through a profile, so the default stack is unchanged.


def test_model_server_is_opt_in(compose: dict[str, Any]) -> None:
    services = compose["services"]
    server = services["model-server"]
    assert server["profiles"] == ["model-server"]
    assert [name for name, s in services.items() if "profiles" in s] == ["model-server"]
    # Off by default: the example .env leaves the workers scoring in-process, and they do not wait for it.
    worker_env = services["worker"]["environment"]
    assert worker_env["PROCESSOR_INFERENCE_URL"] == ""
    assert Settings.model_validate({"inference_url": worker_env["PROCESSOR_INFERENCE_URL"]}).inference_url == ""
    assert "model-server" not in services["worker"]["depends_on"]
    with_server = interpolate(
        raw_compose(), {**read_env_file(ENV_EXAMPLE), "INFERENCE_URL": "http://model-server:8000"}
    )
    url = with_server["services"]["worker"]["environment"]["PROCESSOR_INFERENCE_URL"]
    settings = Settings.model_validate({"inference_url": url})
    assert settings.inference_url == "http://model-server:8000"


def test_model_server_serves_on_the_compose_network(compose: dict[str, Any]) -> None:
    server = compose["services"]["model-server"]
    assert server["command"] == ["serve-model"]
    assert server["build"] == {"context": ".", "target": "model-server"}
    stages = re.findall(r"^FROM \S+(?: AS (\S+))?$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert "model-server" in stages and stages[-1] != "model-server", "the default target must stay the worker"
    env = server["environment"]
    settings = Settings.model_validate(
        {k.removeprefix("PROCESSOR_").lower(): v for k, v in env.items() if k.startswith("PROCESSOR_")}
    )
    assert settings.model_server_host == "0.0.0.0"
    ports = {str(settings.model_server_http_port), str(settings.model_server_grpc_port)}
    assert ports | {str(settings.model_server_metrics_port)} == set(server["expose"])
    assert "ports" not in server  # workers reach it by name; nothing is published
    assert float(server["deploy"]["resources"]["limits"]["cpus"]) == settings.model_server_instances
    assert server["shm_size"]  # the Python backend's tensors go through /dev/shm
    assert server["depends_on"]["migrate"]["condition"] == "service_completed_successfully"  # the registry's tables
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "listing-image-model-server"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["model-server"] and sd["port"] == settings.model_server_metrics_port


def test_model_server_healthcheck_passes_only_when_ready(compose: dict[str, Any], probe_server: HTTPServer) -> None:
    """Its healthcheck against a stand-in /v2/health/ready: exit 0 on 200, non-zero on Triton's 400."""
    server = compose["services"]["model-server"]
    check = server["healthcheck"]
    assert check["test"][:3] == ["CMD", "python", "-c"]
    code = check["test"][3]
    assert "http://127.0.0.1:8000/v2/health/ready" in code
    code = code.replace(":8000/", f":{probe_server.server_address[1]}/")
    _Probe.path_ok = "/v2/health/ready"
    try:
        for status, ok in ((200, True), (400, False)):
            _Probe.status = status
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
            assert (result.returncode == 0) is ok, (status, result.stderr[-500:])
    finally:
        _Probe.path_ok = "/readyz"
    assert check["start_period"]
