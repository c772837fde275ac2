"""At-least-once: a worker SIGKILLed mid-batch loses nothing; its partitions are taken over."""

from __future__ import annotations

import signal

from processor.dev.imageserver import ImageServer
from processor.settings import Settings
from processor.topics import read_topic

from .conftest import event
from .helpers import fetch_rows, wait_for_rows
from .test_end_to_end import produce


async def test_sigkill_mid_batch_loses_nothing(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    # Downloads slower than the commit interval: acking anything before it is stored would be
    # committed while still in flight, and the kill would lose it.
    settings = settings.with_overrides(redis_url="", max_in_flight=48, batch_size=8, broker_commit_interval_s=0.2)
    image_server.latency_s, image_server.jitter_s = 1.0, 0.8
    names = sorted(jpegs)
    events = [
        event(f"k-{i}", image_server.url(names[i % len(names)]), listing=f"listing-{i % 9}", index=i)
        for i in range(150)
    ]
    ids = {e["image_id"] for e in events}
    first = start_worker(settings)
    await produce(settings, events)
    await first.ready()
    await wait_for_rows(settings, {f"k-{i}" for i in range(20)}, timeout_s=60)
    first.stop(signal.SIGKILL)
    stored_at_kill = {r["image_id"] for r in await fetch_rows(settings)}
    assert len(stored_at_kill) < len(ids), "the kill came too late to prove anything"

    second = start_worker(settings)
    await second.ready()
    await wait_for_rows(settings, ids, timeout_s=120)
    rows = await fetch_rows(settings)
    assert {r["image_id"] for r in rows} == ids
    outputs = await read_topic(settings.broker_url, settings.output_topic, expected=len(ids), timeout_s=10)
    assert {o["image_id"] for o in outputs} == ids
    by_event_id: dict[str, set[str]] = {}
    for o in outputs:  # replays may duplicate output events, always with the same id and content
        by_event_id.setdefault(o["event_id"], set()).add(o["image_id"])
    assert all(len(v) == 1 for v in by_event_id.values())


async def test_survivors_take_over_a_dead_workers_partitions(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    settings = settings.with_overrides(redis_url="", max_in_flight=16, broker_commit_interval_s=0.2)
    image_server.latency_s, image_server.jitter_s = 0.3, 0.2
    names = sorted(jpegs)
    events = [
        event(f"t-{i}", image_server.url(names[i % len(names)]), listing=f"listing-{i % 13}", index=i)
        for i in range(300)  # enough that the killed worker still has work when it dies
    ]
    workers = [start_worker(settings), start_worker(settings)]
    await produce(settings, events)
    for worker in workers:
        await worker.ready()
    await wait_for_rows(settings, {"t-0", "t-1", "t-2"}, timeout_s=60)
    workers[0].stop(signal.SIGKILL)  # no restart: the survivor must take its partitions over
    await wait_for_rows(settings, {e["image_id"] for e in events}, timeout_s=120)
    assert workers[1].proc.poll() is None
    await workers[1].ready(timeout_s=30, assignments=2)  # the survivor rebalanced (raises if it never does)
