"""The example subscriber in a second language (examples/node-consumer, KafkaJS + Ajv 2020 strict) reads
records the real sink and listing actor published on the broker: it validates them all, deduplicates by
the documented ids and rebuilds listing and image state as the consumer guide says. Skipped without
node or without `npm ci` in that folder."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from processor.dev.memory import MemoryCache, MemoryStore
from processor.events import Classification, DeadLetter, Deletion, Envelope, ImageEvent
from processor.listings import ImageResult, ListingRules, compute_state
from processor.listings.actor import listing_record
from processor.settings import Settings
from processor.sink import Sink, SinkTopics
from processor.topics import KafkaPublisher, bootstrap, ensure_topics, topic_configs

from .test_poison import classification as unhashed


def classification(image_id: str, version: str, when: datetime) -> Classification:
    result = unhashed(image_id, version, when)
    result.content_hash = "sha256:" + "0" * 64
    return result


EXAMPLE = Path(__file__).parents[1] / "examples/node-consumer"
MISSING = shutil.which("node") is None or not (EXAMPLE / "node_modules").is_dir()
if MISSING and os.environ.get("PROCESSOR_TEST_REQUIRE_TOOLS") == "1":  # CI installs them: fail, never skip
    raise RuntimeError("node or examples/node-consumer/node_modules is missing (npm ci there)")
pytestmark = pytest.mark.skipif(MISSING, reason="needs node and `npm ci` in examples/node-consumer")


async def test_the_node_example_consumer_validates_and_rebuilds_state(settings: Settings) -> None:
    await ensure_topics(settings.broker_url, settings.topics, 2, configs=topic_configs(settings))
    kafka = KafkaPublisher(settings.broker_url)
    await kafka.start()
    try:
        topics = SinkTopics(settings.output_topic, settings.dlq_topic, settings.removals_topic)
        sink = Sink(MemoryStore(), kafka, MemoryCache(), topics, 4, 0.01)
        sink.start()
        when = datetime.now(UTC).replace(microsecond=0)
        try:
            first = classification("n-1", "2026.11.30.9", when)
            moved = classification("n-1", "2026.11.30.9", when + timedelta(seconds=1))
            moved.event = moved.event.model_copy(update={"position_index": 3})  # a real update
            for outcome in (first, moved, classification("n-2", "2026.11.30.9", when)):
                await sink.submit(outcome)
            gone = ImageEvent(image_id="n-2", listing_id="versions", deleted=True)
            await sink.submit(Deletion(gone, Envelope(b"{}", "images", 0, 7), when + timedelta(seconds=2)))
            await sink.submit(DeadLetter(Envelope(b"\xff junk", "images", 1, 9), "invalid_event", "not JSON"))
        finally:
            await sink.stop()
        await kafka.publish([sink.record(moved)])  # a redelivery
        rules = ListingRules()
        kept = replace(compute_state("L-kept", [ImageResult("k", 0, False, "front", "1")], rules), revision=2)
        had = replace(compute_state("L-gone", [ImageResult("g", 0, False, "side", "1")], rules), revision=1)
        gone_state = replace(compute_state("L-gone", [], rules), revision=2)
        await kafka.publish(
            [listing_record(settings.listing_updates_topic, s) for s in (kept, had, gone_state)]
            + [listing_record(settings.listing_updates_topic, replace(kept, revision=1))]  # stale, after
        )
    finally:
        await kafka.stop()

    args = ["--brokers", bootstrap(settings.broker_url), "--idle-ms", "4000"]
    for name, topic in (
        ("classifications", settings.output_topic),
        ("removals", settings.removals_topic),
        ("dlq", settings.dlq_topic),
        ("listings", settings.listing_updates_topic),
    ):
        args += [f"--{name}-topic", topic]
    proc = await asyncio.create_subprocess_exec(
        "node", "consumer.js", *args, cwd=EXAMPLE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-3000:] + out.decode()[-3000:]
    summary = json.loads(out)
    assert summary["invalid"] == []
    assert summary["records"] == 10
    assert set(summary["listings"]) == {"L-kept"} and summary["listings"]["L-kept"]["revision"] == 2
    assert summary["listings_gone"] == ["L-gone"]
    assert summary["images"]["n-1"]["position_index"] == 3, "the position change was dropped as a duplicate"
    assert summary["images_removed"] == ["n-2"]
    assert summary["dead_letters"] == {"invalid_event": 1}
