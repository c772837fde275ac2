"""Fixtures: the real stack (embedded by default, external when PROCESSOR_TEST_* URLs are set),
a local image server, isolated settings per test, and worker subprocesses."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from processor import synth
from processor.demo import READY_MARK
from processor.imageserver import ImageServer
from processor.settings import Settings
from processor.stack import EmbeddedStack, StackUrls, stack_from_env


@pytest.fixture(scope="session")
def stack_urls() -> Iterator[StackUrls]:
    external = stack_from_env()
    if external is not None:
        yield external
        return
    with EmbeddedStack() as stack:
        assert stack.urls is not None
        yield stack.urls


@pytest.fixture(scope="session")
def jpegs() -> dict[str, bytes]:
    """A few generated listing photos, by name; names ending in -b carry a banner."""
    rng = random.Random(11)
    images = {}
    for i in range(30):
        position = synth.POSITIONS[i % len(synth.POSITIONS)]
        banner = i % 3 == 0
        img = synth.render(rng, position, banner, (640, 480))
        images[f"p{i:02d}-{position}{'-b' if banner else ''}.jpg"] = synth.to_jpeg(img, 85)
    return images


@pytest.fixture
async def image_server(jpegs: dict[str, bytes]) -> AsyncIterator[ImageServer]:
    async with ImageServer(images=dict(jpegs)) as server:
        yield server


@pytest.fixture
async def forbidden_server(jpegs: dict[str, bytes]) -> AsyncIterator[ImageServer]:
    """A server on 127.0.0.2: loopback, but outside the tests' allow-list (127.0.0.1/32)."""
    async with ImageServer(images=dict(jpegs), host="127.0.0.2") as server:
        yield server


@pytest.fixture
def settings(stack_urls: StackUrls) -> Settings:
    """Settings with this test's own topics, consumer group and table."""
    tag = uuid.uuid4().hex[:10]
    return Settings(
        broker_url=stack_urls.broker_url,
        postgres_dsn=stack_urls.postgres_dsn,
        redis_url=stack_urls.redis_url,
        input_topic=f"images-{tag}",
        output_topic=f"classifications-{tag}",
        dlq_topic=f"dlq-{tag}",
        consumer_group=f"test-{tag}",
        postgres_table=f"classifications_{tag}",
        topic_partitions=4,
        allow_networks="127.0.0.1/32",
        fetch_attempts=2,
        fetch_backoff_s=0.05,
        fetch_total_timeout_s=5,
        shutdown_grace_s=5,
    )


class WorkerProcess:
    """A ``processor worker`` subprocess with its log."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        env = dict(os.environ)
        for key, value in settings.model_dump().items():
            if value is not None:
                joined = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
                env[f"PROCESSOR_{key.upper()}"] = joined
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "processor", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def ready(self, timeout_s: float = 90.0, marks: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if self.log().count(READY_MARK) >= marks:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout_s} s:\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings], WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop(signal.SIGKILL if worker.proc.poll() is None else signal.SIGTERM, 10)


def event(image_id: str, url: str, listing: str = "listing-1", index: int | None = 0) -> dict[str, Any]:
    return {
        "image_id": image_id,
        "listing_id": listing,
        "url": url,
        "position_index": index,
        "event_time": "2026-11-29T12:00:00Z",
    }
