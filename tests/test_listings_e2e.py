"""The listing actor end to end: shuffled, duplicated, replaced and deleted events of the same listings
through two workers, one of them SIGKILLed and restarted; every listing's stored state and its last
listing-updates record equal the rules applied to the final image set."""

from __future__ import annotations

import asyncio
import random
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from processor.dev.imageserver import ImageServer
from processor.events import version_key
from processor.listings import ImageResult, ListingState, compute_state
from processor.settings import Settings
from processor.topics import ConsumerRecord

from .contract import check_topics
from .helpers import fetch_rows, wait_for_rows
from .test_end_to_end import produce
from .test_poison import wait_for_zero_lag

LISTINGS, IMAGES = 6, 8


def scenario(rng: random.Random, server: ImageServer, names: list[str]) -> tuple[list[dict[str, Any]], set[str]]:
    """The events (shuffled, some twice) and the image ids that survive them."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    events, surviving = [], set()
    for listing in range(LISTINGS):
        for index in range(IMAGES):
            image_id, lid = f"L{listing}-{index}", f"L{listing}"
            first = {"image_id": image_id, "listing_id": lid, "url": server.url(rng.choice(names))}
            first |= {"position_index": index, "event_time": t0.isoformat()}
            events.append(first)
            roll = rng.random()
            later = (t0 + timedelta(minutes=5)).isoformat()
            if roll < 0.25:  # deleted later: gone
                events.append({"image_id": image_id, "listing_id": lid, "deleted": True, "event_time": later})
                continue
            if roll < 0.35:  # a deletion older than the image: ignored
                older = (t0 - timedelta(minutes=5)).isoformat()
                events.append({"image_id": image_id, "listing_id": lid, "deleted": True, "event_time": older})
            elif roll < 0.55:  # replaced by a newer photo behind a new URL
                events.append({**first, "url": server.url(rng.choice(names)), "event_time": later})
            surviving.add(image_id)
    events += rng.sample(events, len(events) // 4)  # duplicates (replays)
    rng.shuffle(events)
    return events, surviving


async def test_listing_states_equal_the_rules_on_the_final_images_whatever_the_order(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    rng = random.Random(14)
    settings = settings.with_overrides(topic_partitions=4, broker_commit_interval_s=0.2)
    events, surviving = scenario(rng, image_server, sorted(jpegs))
    workers = [start_worker(settings), start_worker(settings)]
    half = len(events) // 2
    await produce(settings, [orjson.dumps(e) for e in events[:half]])
    for worker in workers:
        await worker.ready()
    await asyncio.sleep(1.5)
    workers[0].stop(signal.SIGKILL)  # mid-stream
    workers[0] = start_worker(settings)
    await produce(settings, [orjson.dumps(e) for e in events[half:]])
    await wait_for_rows(settings, {e["image_id"] for e in events}, timeout_s=120)
    await wait_for_zero_lag(settings, timeout_s=60)

    rows = await fetch_rows(settings)
    alive = [r for r in rows if not r["deleted"]]
    assert {r["image_id"] for r in alive} == surviving
    rules = settings.listing_rules()
    expected = {
        f"L{i}": compute_state(
            f"L{i}",
            [
                ImageResult(r["image_id"], r["position_index"], r["has_banner"], r["position"], r["model_version"])
                for r in alive
                if r["listing_id"] == f"L{i}"
            ],
            rules,
        )
        for i in range(LISTINGS)
    }
    stored = await wait_for_states(settings, expected)
    topics = await check_topics(settings)  # every record of every topic validates, headers and keys too
    last = snapshot(topics[settings.listing_updates_topic])
    for listing, state in expected.items():
        assert stored[listing] == state, f"{listing}: stored state differs from the rules on the final images"
        if state.image_count:
            assert last[listing] == state, f"{listing}: the last listing-updates record is not the current state"
        else:  # a tombstone, or never published
            assert last.get(listing) is None, f"{listing}: an empty listing is still on listing-updates"
    images = merge(topics[settings.output_topic], topics[settings.removals_topic])
    assert {i for i, r in images.items() if r is not None} == surviving
    for row in alive:  # the subscriber's fold agrees with Postgres on every image
        record = images[row["image_id"]]
        assert record is not None and record["url"] == row["url"]
        assert record["position_index"] == row["position_index"] and record["result_id"] == str(row["output_id"])


def snapshot(records: list[ConsumerRecord]) -> dict[str, ListingState | None]:
    """What a subscriber bootstrapping from listing-updates holds: per key, the record with the highest
    revision (from the revision header: tombstones have no value), None for a tombstone."""
    best: dict[str, tuple[int, ListingState | None]] = {}
    for record in records:
        assert record.key is not None
        key, revision = record.key.decode(), int(record.header("revision") or 0)
        state = None if record.value is None else ListingState.from_output(orjson.loads(record.value))
        if key not in best or revision >= best[key][0]:
            best[key] = (revision, state)
    return {key: state for key, (_, state) in best.items()}


def merge(classifications: list[ConsumerRecord], removals: list[ConsumerRecord]) -> dict[str, dict[str, Any] | None]:
    """The consumer guide's merge of image-classifications and image-removals, deduplicated by result_id:
    per image the greatest (event_time, removal, model.generation, model.version as numbers) wins (None:
    removed), the order Postgres applies."""
    seen: set[str] = set()
    current: dict[str, tuple[tuple[datetime, bool, int, tuple[int, ...]], dict[str, Any] | None]] = {}
    for record in [*classifications, *removals]:
        value = orjson.loads(record.value or b"{}")
        if value["result_id"] in seen:
            continue
        seen.add(value["result_id"])
        removal, model = value.get("deleted", False), value.get("model", {"generation": 0, "version": ""})
        when = datetime.fromisoformat(value["event_time"])
        order = (when, removal, model["generation"], version_key(model["version"]))
        image = value["image_id"]
        if image not in current or order > current[image][0]:
            current[image] = (order, None if removal else value)
    return {image: value for image, (_, value) in current.items()}


async def wait_for_states(
    settings: Settings, expected: dict[str, ListingState], timeout_s: float = 60
) -> dict[str, ListingState]:
    from .helpers import connect

    stored: dict[str, ListingState] = {}
    for _ in range(int(timeout_s / 0.5)):
        conn = await connect(settings)
        try:
            found = await conn.fetch(f'SELECT state FROM "{settings.listings_table}"')
        finally:
            await conn.close()
        stored = {s.listing_id: s for s in (ListingState.from_output(orjson.loads(r["state"])) for r in found)}
        if stored == expected:
            return stored
        await asyncio.sleep(0.5)
    return stored
