"""The worker's health endpoint against real components: readiness follows Postgres (stopped and started
for real), liveness answers, and a real Prometheus (Debian's package) scraping two workers reads their
consumer lag and model through its query API."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from processor.dev.harness import WorkerProcess, isolated_settings
from processor.dev.imageserver import ImageServer
from processor.dev.stack import EmbeddedStack, free_port, stop_processes
from processor.settings import Settings

from .conftest import event
from .helpers import SHIPPED_MODEL_NAME, wait_for_rows
from .test_end_to_end import produce

REQUIRE_TOOLS = bool(os.environ.get("PROCESSOR_TEST_REQUIRE_TOOLS"))


@pytest.fixture
def own_stack() -> Iterator[EmbeddedStack]:
    with EmbeddedStack() as stack:
        yield stack


async def wait_for_status(worker: WorkerProcess, path: str, status: int, timeout_s: float = 30) -> dict[str, object]:
    body: dict[str, object] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got, body = await asyncio.to_thread(worker.probe, path)
        if got == status:
            return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"{path} did not answer {status} within {timeout_s} s: {body}")


async def test_readiness_follows_postgres_and_liveness_answers(
    own_stack: EmbeddedStack, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    assert own_stack.urls is not None
    settings = isolated_settings(own_stack.urls, "health", topic_partitions=2, monitor_interval_s=0.5)
    worker = start_worker(settings)
    await produce(settings, [event("h-0", image_server.url(sorted(jpegs)[0]))])
    ready = await wait_for_status(worker, "/readyz", 200, timeout_s=120)
    assert ready["model_loaded"] and ready["postgres"] and ready["assigned"]
    await wait_for_rows(settings, {"h-0"})
    assert (await asyncio.to_thread(worker.probe, "/healthz"))[0] == 200

    await asyncio.to_thread(own_stack.stop_postgres)
    not_ready = await wait_for_status(worker, "/readyz", 503)
    assert not_ready["postgres"] is False and not_ready["model_loaded"] is True
    assert (await asyncio.to_thread(worker.probe, "/healthz"))[0] == 200, "an idle worker is alive"
    await asyncio.to_thread(own_stack.start_postgres)
    await wait_for_status(worker, "/readyz", 200)


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if REQUIRE_TOOLS:
            raise AssertionError("prometheus is required here (apt-get install prometheus)")
        pytest.skip("no prometheus binary (Debian package prometheus)")
    return found


async def test_prometheus_scrapes_two_workers_and_reads_their_lag(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker, tmp_path: Path
) -> None:
    binary = prometheus_binary()
    settings = settings.with_overrides(topic_partitions=4, monitor_interval_s=0.5)
    workers = [start_worker(settings), start_worker(settings)]
    await produce(
        settings, [event(f"p-{i}", image_server.url(n), listing=f"l{i}") for i, n in enumerate(sorted(jpegs)[:8])]
    )
    for worker in workers:
        await worker.ready()
    targets = ", ".join(f"'127.0.0.1:{w.settings.metrics_port}'" for w in workers)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: processor, static_configs: [{{targets: [{targets}]}}]}}]\n"
    )
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        server = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        lag = await query_until(port, "count by (instance) (processor_consumer_lag)", 2)
        assert len(lag) == 2, f"lag from {len(lag)} workers: {lag}"
        models = await query_until(port, "processor_model_info", 2)
        assert {m["metric"]["name"] for m in models} == {SHIPPED_MODEL_NAME}
        up = await query_until(port, "up == 1", 2)
        assert len(up) == 2
    finally:
        stop_processes([server], 10)


async def query_until(port: int, query: str, results: int, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Prometheus's instant query result, once it has ``results`` series (or at the deadline)."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}) as resp:
                    body = await resp.json()
                found = body["data"]["result"]
                if len(found) >= results:
                    return found
            except aiohttp.ClientError:
                pass  # not listening yet
            await asyncio.sleep(0.5)
    return found
