"""Backfill and dead-letter redrive through a real worker: a catalogue file goes onto the backfill topic,
which the worker consumes beside the daily events; dead letters of a kind are redriven exactly once."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

from processor.dev.imageserver import ImageServer
from processor.settings import Settings

from .conftest import event
from .helpers import fetch_dead_letters, fetch_rows, processor_command, wait_for_rows
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
