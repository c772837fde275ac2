"""Backfill and dead-letter redrive through a real worker: a catalogue file goes onto the backfill topic,
which the worker consumes beside the daily events (or a backfill worker at idle priority beside a daily
one); dead letters of a kind are redriven exactly once."""

from __future__ import annotations

import asyncio
import csv
import os
from pathlib import Path

import orjson

from processor.dev.imageserver import ImageServer
from processor.priority import is_idle
from processor.settings import Settings

from .conftest import event
from .helpers import connect, fetch_dead_letters, fetch_rows, processor_command, wait_for_rows
from .test_end_to_end import produce
from .test_poison import wait_for_zero_lag


async def test_a_backfill_file_and_daily_events_are_both_classified(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker, tmp_path: Path
) -> None:
    names = sorted(jpegs)
    catalogue = tmp_path / "catalogue.csv"
    with catalogue.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["image_id", "listing_id", "url", "position_index", "event_time"])
        writer.writeheader()
        for i, name in enumerate(names[:16]):
            writer.writerow(event(f"bf-{i}", image_server.url(name) + "?bf", listing=f"bl-{i % 3}", index=i))
    worker = start_worker(settings)
    daily = [event(f"day-{i}", image_server.url(n), listing="daily", index=i) for i, n in enumerate(names[16:22])]
    await produce(settings, daily)
    await worker.ready()
    sent = processor_command(settings, "backfill", str(catalogue), "--rate", "200")
    assert sent.returncode == 0, sent.stderr[-2000:]
    assert f"sent 16 events to {settings.backfill_topic}" in sent.stderr and "backfill" in sent.stderr  # bar + ETA
    await wait_for_rows(settings, {f"bf-{i}" for i in range(16)} | {e["image_id"] for e in daily}, timeout_s=90)
    assert len(await fetch_rows(settings)) == 22


async def test_a_backfill_worker_beside_a_daily_one_runs_at_idle_priority(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker, tmp_path: Path
) -> None:
    names = sorted(jpegs)
    catalogue = tmp_path / "catalogue.jsonl"
    backfill = [event(f"bf-{i}", image_server.url(n) + "?bf", listing="bl", index=i) for i, n in enumerate(names[:8])]
    catalogue.write_text("".join(orjson.dumps(e).decode() + "\n" for e in backfill))
    daily_worker = start_worker(settings.with_overrides(worker_role="daily"))
    backfill_worker = start_worker(settings.with_overrides(worker_role="backfill"))
    daily = [event(f"day-{i}", image_server.url(n), listing="daily", index=i) for i, n in enumerate(names[8:12])]
    await produce(settings, daily)
    await asyncio.gather(daily_worker.ready(), backfill_worker.ready())
    sent = processor_command(settings, "backfill", str(catalogue), "--rate", "200")
    assert sent.returncode == 0, sent.stderr[-2000:]
    await wait_for_rows(settings, {e["image_id"] for e in backfill + daily}, timeout_s=90)

    threads = os.listdir(f"/proc/{backfill_worker.proc.pid}/task")
    assert len(threads) > 2 and all(is_idle(int(t)) for t in threads), "a backfill thread at normal priority"
    assert not is_idle(daily_worker.proc.pid)
    assert f"consuming {settings.backfill_topic} as group {settings.consumer_group}-backfill" in backfill_worker.log()
    assert f"consuming {settings.input_topic} as group {settings.consumer_group}" in daily_worker.log()
    # the daily group's listing actor keeps the backfilled listings too
    assert await _listing_images(settings, "bl", len(backfill)) == len(backfill)


async def _listing_images(settings: Settings, listing_id: str, expected: int) -> int | None:
    """The listing's image count once it reaches ``expected`` (or the last one seen within a minute)."""
    conn = await connect(settings)
    count = None
    try:
        for _ in range(120):
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", settings.listings_table):
                query = f'SELECT image_count FROM "{settings.listings_table}" WHERE listing_id = $1'
                count = await conn.fetchval(query, listing_id)
                if count == expected:
                    break
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    return count


async def test_dead_letters_of_a_kind_are_redriven_once(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    settings = settings.with_overrides(broker_commit_interval_s=0.2)
    name = sorted(jpegs)[0]
    outage = [event(f"cdn-{i}", image_server.url(f"later-{i}.jpg"), index=i) for i in range(5)]  # 404 for now
    invalid = b'{"image_id": "never", "url": 3}'
    worker = start_worker(settings)
    await produce(settings, [*outage, invalid])
    await worker.ready()
    outcome = await wait_for_rows(settings, {e["image_id"] for e in outage})
    assert {outcome[e["image_id"]] for e in outage} == {"fetch_failed"}

    for i in range(5):  # the CDN is back
        image_server.images[f"later-{i}.jpg"] = jpegs[name]
    first = processor_command(settings, "dlq", "redrive", "--kind", "fetch_failed")
    assert first.returncode == 0 and "redrove 5 dead letters" in first.stderr, first.stderr[-2000:]
    for _ in range(120):
        if len(await fetch_rows(settings)) == 5:
            break
        await asyncio.sleep(0.5)
    assert {r["image_id"] for r in await fetch_rows(settings)} == {e["image_id"] for e in outage}
    again = processor_command(settings, "dlq", "redrive", "--kind", "fetch_failed")
    assert "redrove 0 dead letters" in again.stderr, "a dead letter was redriven twice"
    kinds = [d["error_kind"] for d in await fetch_dead_letters(settings)]
    assert kinds.count("invalid_event") == 1, "a kind not asked for was redriven"
    await wait_for_zero_lag(settings)
