"""Chaos: several workers, thousands of mixed events with poison pills, random SIGKILLs and restarts,
Postgres paused, Postgres stopped and started for real, Redis killed and restarted.

Marked ``chaos`` (``make chaos``); CHAOS_EVENTS and CHAOS_ROUNDS make it longer. At the end every
event id is accounted for exactly once (a row or a dead letter), the consumer group's committed
offsets are at the end of every partition (zero lag: no stalled partition), and nothing was fetched
from a blocked address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import orjson
import psutil
import pytest

from processor.dev.harness import WorkerProcess, isolated_settings
from processor.dev.imageserver import ImageServer
from processor.dev.stack import EmbeddedStack

from .conftest import event
from .helpers import fetch_dead_letters, fetch_rows, wait_for_rows
from .test_end_to_end import produce
from .test_poison import poison_pills, wait_for_zero_lag

PILLS = {k: v for k, v in poison_pills().items() if k != "ansi"}

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
EVENTS = int(os.environ.get("CHAOS_EVENTS", "3000"))
WORKERS = 3


def postgres_processes(dsn: str) -> list[psutil.Process]:
    """The embedded server's processes (its socket directory is its data directory)."""
    hosts = parse_qs(urlparse(dsn).query).get("host", [])
    if not hosts:
        return []
    return [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres" and any(hosts[0] in part for part in (p.info["cmdline"] or []))
    ]


@contextlib.contextmanager
def paused(processes: list[psutil.Process]) -> Iterator[None]:
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.suspend()
    try:
        yield
    finally:
        for p in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.resume()


def mixed_events(rng: random.Random, server: ImageServer, forbidden: ImageServer, names: list[str]) -> list[bytes]:
    out = []
    for i in range(EVENTS):
        roll = rng.random()
        name = rng.choice(names)
        if roll < 0.75:
            url = server.url(name) + (f"?v={i}" if rng.random() < 0.5 else "")  # half are cache misses
        elif roll < 0.80:
            url = f"{server.base_url}/status/{rng.choice([404, 410, 500])}"
        elif roll < 0.85:
            url = rng.choice(
                [
                    forbidden.url(name),
                    f"{server.base_url}/redirect?to={forbidden.url(name)}",
                    "http://169.254.169.254/",
                    "file:///etc/passwd",
                    "http://[::1]/x.jpg",
                ]
            )
        elif roll < 0.90:
            url = rng.choice([f"{server.base_url}/html", f"{server.base_url}/truncated/{name}"])
        elif roll < 0.95:
            out.append(
                rng.choice(
                    [b'{"image_id": "c-%d", "url": 3}' % i, b"\xff\xfe garbage %d" % i, b'{"image_id": "c-%d"}' % i]
                )
            )
            continue
        else:  # the poison pills of issue #12, renamed so each is counted
            pill = rng.choice(list(PILLS.values()))
            out.append(re.sub(rb'"image_id":"[^"]*"', b'"image_id":"c-%d"' % i, pill, count=1))
            continue
        out.append(orjson.dumps(event(f"c-{i}", url, listing=f"l-{i % 97}", index=i % 12)))
    return out


@pytest.fixture
def own_stack() -> Iterator[EmbeddedStack]:
    """A stack of this test's own: its Postgres and Redis are stopped and started."""
    with EmbeddedStack() as stack:
        yield stack


async def test_chaos_every_event_accounted_exactly_once_and_no_partition_stalls(
    own_stack: EmbeddedStack,
    image_server: ImageServer,
    forbidden_server: ImageServer,
    jpegs: dict[str, bytes],
    start_worker,
) -> None:
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "5")))
    assert own_stack.urls is not None
    settings = isolated_settings(
        own_stack.urls,
        "chaos",
        topic_partitions=6,
        max_in_flight=64,
        fetch_attempts=2,
        fetch_backoff_s=0.05,
        fetch_total_timeout_s=3,
        broker_commit_interval_s=0.2,
        shutdown_grace_s=5,
    )
    image_server.latency_s, image_server.jitter_s = 0.5, 0.45  # work stays in flight across commits
    events = mixed_events(rng, image_server, forbidden_server, sorted(jpegs))
    ids_with_names = {f"c-{i}" for i, raw in enumerate(events) if b'"image_id":"c-%d"' % i in raw}
    workers: list[WorkerProcess] = [start_worker(settings) for _ in range(WORKERS)]
    rounds = int(os.environ.get("CHAOS_ROUNDS", "6"))
    waves = [events[i::rounds] for i in range(rounds)]
    await produce(settings, waves[0])
    for w in workers:
        await w.ready()

    pg = postgres_processes(settings.postgres_dsn)
    kills = 0
    for round_ in range(rounds):
        if round_:
            await produce(settings, waves[round_])
        await asyncio.sleep(rng.uniform(2, 5))
        victim = rng.randrange(WORKERS)
        workers[victim].stop(signal.SIGKILL)
        kills += 1
        workers[victim] = start_worker(settings)
        if round_ == 2 and pg:
            with paused(pg):
                await asyncio.sleep(4)
        if round_ == 3:  # a real Postgres outage: stopped (connections cut), then started again
            await asyncio.to_thread(own_stack.stop_postgres)
            await asyncio.sleep(5)
            await asyncio.to_thread(own_stack.start_postgres)
        if round_ == 4:  # Redis killed; it comes back empty on the same port
            own_stack.kill_redis()
            await asyncio.sleep(3)
            own_stack.start_redis()
    expected_ids = ids_with_names | {f"c-{i}" for i, raw in enumerate(events) if b'"image_id": "c-' in raw}
    await wait_for_rows(settings, expected_ids, timeout_s=300)
    for _ in range(300):  # events without an image id are counted, not named
        rows, dead = await fetch_rows(settings), await fetch_dead_letters(settings)
        if len(rows) + len(dead) >= len(events):
            break
        await asyncio.sleep(0.5)
    classified = [r["image_id"] for r in rows]
    dead_ids = [d["image_id"] for d in dead if d["image_id"] is not None]
    assert len(dead) + len(rows) == len(events), "some events have no outcome, or more than one"
    assert not set(classified) & set(dead_ids), "an event is both classified and dead-lettered"
    assert len(set(dead_ids)) == len(dead_ids)
    assert sum(forbidden_server.requests.values()) == 0, "fetched from a blocked address"
    assert kills >= 3
    await wait_for_zero_lag(settings, timeout_s=60)
    assert all(w.proc.poll() is None for w in workers), "a worker died on its own"
