"""The whole system on a real broker, Postgres and Redis, with worker subprocesses."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import jsonschema
import orjson
import pytest

from processor.decode import decode_image
from processor.dev.imageserver import ImageServer
from processor.model import Classifier
from processor.settings import Settings
from processor.topics import ensure_topics, produce_lines, read_topic

from .conftest import event
from .contract import check_topics, dead_letter_kinds
from .helpers import SHIPPED_MODEL_NAME, fetch_dead_letters, fetch_rows, wait_for_rows

SCHEMA = json.loads((Path(__file__).parents[1] / "processor/schemas/image-classification.schema.json").read_text())


async def produce(settings: Settings, events: list[dict[str, object]] | list[bytes]) -> None:
    lines = [e if isinstance(e, bytes) else orjson.dumps(e) for e in events]
    await ensure_topics(settings.broker_url, [settings.input_topic], settings.topic_partitions)
    assert await produce_lines(settings.broker_url, settings.input_topic, lines) == len(lines)


async def test_every_event_ends_in_postgres_topic_or_dlq(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    worker = start_worker(settings)
    names = sorted(jpegs)
    good = [event(f"img-{i}", image_server.url(n), listing=f"listing-{i % 4}", index=i) for i, n in enumerate(names)]
    missing = event("img-404", image_server.url("no-such-photo.jpg"))
    invalid = b'{"image_id": "img-bad", "listing_id": 7}'
    await produce(settings, [*good, missing, invalid])
    await worker.ready()

    outcome = await wait_for_rows(settings, {e["image_id"] for e in good} | {"img-404", "img-bad"})
    assert outcome["img-404"] == "fetch_failed"
    assert outcome["img-bad"] == "invalid_event"
    assert {e["image_id"]: outcome[e["image_id"]] for e in good} == {e["image_id"]: "ok" for e in good}

    rows = await fetch_rows(settings)
    assert len(rows) == len(good)
    assert {r["model_name"] for r in rows} == {SHIPPED_MODEL_NAME} and all(r["model_version"] for r in rows)
    by_id = {r["image_id"]: r for r in rows}
    # The worker scores exactly what the model says of the decoded photo (its accuracy: tests/test_model.py).
    classifier = Classifier(settings.model_dir, runtime=settings.inference_runtime)
    decoded = [decode_image(jpegs[n], classifier.input_size, settings.max_image_pixels).pixels for n in names]
    for i, direct in enumerate(classifier.predict(decoded)):
        row = by_id[f"img-{i}"]
        assert row["banner_score"] == pytest.approx(direct.banner_score, abs=1e-3), names[i]
        assert (
            row["has_banner"] == (direct.banner_score >= classifier.banner_threshold)
            or abs(direct.banner_score - classifier.banner_threshold) < 1e-3
        )

    outputs = await read_topic(settings.broker_url, settings.output_topic, expected=len(good))
    assert {o["image_id"] for o in outputs} == set(by_id)
    for record in outputs:
        jsonschema.validate(record, SCHEMA)
        row = by_id[record["image_id"]]
        model = {"name": row["model_name"], "version": row["model_version"], "generation": row["model_generation"]}
        assert record["model"] == model
        assert record["has_banner"] == row["has_banner"] and record["position"] == row["position"]
        assert str(row["output_id"]) == record["event_id"]

    dlq = await read_topic(settings.broker_url, settings.dlq_topic, expected=2)
    kinds = {(d["image_id"], d["error"]["kind"]) for d in dlq}
    assert kinds == {("img-404", "fetch_failed"), ("img-bad", "invalid_event")}
    bad = next(d for d in dlq if d["error"]["kind"] == "invalid_event")
    assert bad["event"] == {"image_id": "img-bad", "listing_id": 7} and "url" in bad["error"]["detail"]
    topics = await check_topics(settings)  # every record of every topic, as a subscriber reads it
    assert dead_letter_kinds(topics[settings.dlq_topic]) == {"fetch_failed": 1, "invalid_event": 1}
    assert len(topics[settings.listing_updates_topic]) >= 4
    assert worker.stop() == 0


async def test_second_pass_is_served_from_cache(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    worker = start_worker(settings.with_overrides(revalidate_after_s=3600))  # trust the URL cache for an hour
    names = sorted(jpegs)[:10]
    first = [event(f"a-{i}", image_server.url(n), index=i) for i, n in enumerate(names)]
    await produce(settings, first)
    await worker.ready()
    await wait_for_rows(settings, {e["image_id"] for e in first})
    assert all(image_server.requests[f"/img/{n}"] == 1 for n in names)

    second = [event(f"b-{i}", image_server.url(n), index=i) for i, n in enumerate(names)]
    await produce(settings, second)
    await wait_for_rows(settings, {e["image_id"] for e in second})
    assert all(image_server.requests[f"/img/{n}"] == 1 for n in names), "second pass downloaded again"

    outputs = await read_topic(settings.broker_url, settings.output_topic, expected=20)
    cache = {o["image_id"]: o["cache"] for o in outputs}
    # same bytes may have been classified by an earlier test: "hash" is a hit after download
    assert all(cache[f"a-{i}"] in ("miss", "hash") for i in range(10))
    assert all(cache[f"b-{i}"] == "url" for i in range(10))
    rows = {r["image_id"]: r for r in await fetch_rows(settings)}
    for i in range(10):  # the cached result is the same classification
        assert rows[f"a-{i}"]["content_hash"] == rows[f"b-{i}"]["content_hash"]
        assert rows[f"a-{i}"]["banner_score"] == pytest.approx(rows[f"b-{i}"]["banner_score"], abs=1e-6)


async def test_a_repeated_url_is_revalidated_and_a_replaced_photo_is_classified_again(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    worker = start_worker(settings)  # revalidate_after_s = 0: every repeat asks the server
    names = sorted(jpegs)[:6]
    first = [event(f"r1-{i}", image_server.url(n), index=i) for i, n in enumerate(names)]
    await produce(settings, first)
    await worker.ready()
    await wait_for_rows(settings, {e["image_id"] for e in first})
    sent = image_server.bytes_sent

    image_server.images[names[0]] = jpegs[sorted(jpegs)[-1]]  # the dealer replaced the photo behind a URL
    second = [event(f"r2-{i}", image_server.url(n), index=i) for i, n in enumerate(names)]
    await produce(settings, second)
    await wait_for_rows(settings, {e["image_id"] for e in second})
    outputs = {o["image_id"]: o for o in await read_topic(settings.broker_url, settings.output_topic, expected=12)}
    assert [outputs[f"r2-{i}"]["cache"] for i in range(1, 6)] == ["revalidated"] * 5
    assert outputs["r2-0"]["cache"] in ("miss", "hash"), "a replaced photo was served from the cache"
    assert outputs["r2-0"]["content_hash"] != outputs["r1-0"]["content_hash"]
    assert image_server.not_modified == 5 and image_server.bytes_sent - sent == len(jpegs[sorted(jpegs)[-1]])


async def test_restarted_worker_does_not_reprocess_committed_events(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    settings = settings.with_overrides(redis_url="")  # no cache: a replay would have to download again
    names = sorted(jpegs)
    first = [event(f"r1-{i}", image_server.url(n), index=i) for i, n in enumerate(names[:12])]
    worker = start_worker(settings)
    await produce(settings, first)
    await worker.ready()
    await wait_for_rows(settings, {e["image_id"] for e in first})
    assert worker.stop(signal.SIGTERM) == 0
    before = {r["image_id"]: r["classified_at"] for r in await fetch_rows(settings)}
    downloads = sum(image_server.requests.values())

    second = [event(f"r2-{i}", image_server.url(n), index=i) for i, n in enumerate(names[12:])]
    restarted = start_worker(settings)
    await produce(settings, second)
    await restarted.ready()
    await wait_for_rows(settings, {e["image_id"] for e in second})
    after = {r["image_id"]: r["classified_at"] for r in await fetch_rows(settings)}
    assert {k: after[k] for k in before} == before, "committed events were classified again"
    assert sum(image_server.requests.values()) == downloads + len(second)
    outputs = await read_topic(settings.broker_url, settings.output_topic, expected=len(names))
    assert sorted(o["image_id"] for o in outputs) == sorted(after), "duplicate output events after restart"
    assert await fetch_dead_letters(settings) == []
    await check_topics(settings)
