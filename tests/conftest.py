"""Fixtures: the real stack (embedded by default, external when PROCESSOR_TEST_* URLs are set),
a local image server, isolated settings per test, and worker subprocesses."""

from __future__ import annotations

import random
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from processor.dev.harness import WorkerProcess, isolated_settings
from processor.dev.imageserver import ImageServer
from processor.dev.stack import EmbeddedStack, StackUrls, stack_from_env
from processor.ml import synth
from processor.settings import Settings


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
    return isolated_settings(
        stack_urls,
        "test",
        topic_partitions=4,
        fetch_attempts=2,
        fetch_backoff_s=0.05,
        fetch_total_timeout_s=5,
        shutdown_grace_s=5,
    )


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
