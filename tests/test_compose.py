"""docker-compose.yml (no Docker engine runs here): services, ports and settings it must have."""

from __future__ import annotations

from pathlib import Path

import yaml

from processor.settings import Settings

ROOT = Path(__file__).parents[1]


def test_compose_has_the_production_shape() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres", "redis", "worker"} <= services.keys()
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert "9092:9092" in kafka["ports"] and "5432:5432" in services["postgres"]["ports"]
    assert "6379:6379" in services["redis"]["ports"]
    worker = services["worker"]
    assert worker["build"] == "." and (ROOT / "Dockerfile").exists()
    assert worker["deploy"]["replicas"] >= 2
    env = worker["environment"]
    assert env["PROCESSOR_BROKER_URL"].endswith("kafka:9092")
    assert "@postgres:5432/" in env["PROCESSOR_POSTGRES_DSN"] and env["PROCESSOR_REDIS_URL"].startswith("redis://redis")
    settings = Settings.model_validate({k.removeprefix("PROCESSOR_").lower(): v for k, v in env.items()})
    assert settings.topic_partitions >= 2
    unknown = {k for k in env if k.removeprefix("PROCESSOR_").lower() not in Settings.model_fields}
    assert not unknown, f"compose sets variables no setting reads: {unknown}"
    for dependency in ("kafka", "redis", "migrate"):
        assert dependency in worker["depends_on"]
