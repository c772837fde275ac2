"""No message can stall a partition (issue #12): poison pills through a real worker end as dead
letters, the worker's committed offsets reach the end of every partition, and storage refusing one
item costs that item alone. Each test here failed on the code before the fix (see the note on #12)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from processor.cache import ResultCache
from processor.dev.imageserver import ImageServer
from processor.dev.memory import MemoryCache, MemoryStore
from processor.dev.stack import StackUrls
from processor.errors import InvalidEvent, rejects_item
from processor.events import Classification, DeadLetter, Envelope, EventLimits, ImageEvent, parse_event, version_key
from processor.settings import Settings
from processor.sink import Record, Sink, SinkTopics
from processor.store import PostgresStore
from processor.topics import group_lag, read_topic

from .conftest import event
from .contract import check_topics, dead_letter_kinds
from .helpers import fetch_dead_letters, fetch_rows, wait_for_rows
from .test_end_to_end import produce

DEEP = 1000


def poison_pills() -> dict[str, bytes]:
    """Named raw events that each broke the worker before (the #12 table, rows 1, 2, 3, 5, 15)."""
    base = {"listing_id": "poison", "url": "http://127.0.0.1:9/x.jpg"}
    return {
        "deep": b'{"image_id":"deep","listing_id":"poison","url":"http://x/","x":' + b"[" * DEEP + b"]" * DEEP + b"}",
        "year-1": orjson.dumps({**base, "image_id": "year-1", "event_time": "0001-01-01T00:00:00+14:00"}),
        "year-9999": orjson.dumps({**base, "image_id": "year-9999", "event_time": "9999-12-31T23:59:59-05:00"}),
        "far-future": orjson.dumps({**base, "image_id": "far-future", "event_time": "9999-12-31T23:59:59Z"}),
        "huge": orjson.dumps({**base, "image_id": "huge", "pad": "SECRET-PAYLOAD" * 64_000}),
        "numbers": b'{"image_id":"numbers","listing_id":"poison","url":"http://x/","n":['
        + b",".join([b"1e15"] * 75_000)
        + b"]}",
        "ansi": orjson.dumps({**base, "image_id": "ansi\x1b[31m-red"}),
    }


async def test_poison_pills_end_as_dead_letters_and_every_partition_is_committed_to_its_end(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    settings = settings.with_overrides(store_batch_delay_ms=200, broker_commit_interval_s=0.2)
    names = sorted(jpegs)[:12]
    good = [event(f"good-{i}", image_server.url(n), listing=f"l-{i % 4}", index=i) for i, n in enumerate(names)]
    pills = poison_pills()
    lines = [orjson.dumps(e) for e in good[:6]] + list(pills.values()) + [orjson.dumps(e) for e in good[6:]]
    worker = start_worker(settings)
    await produce(settings, lines)
    await worker.ready()

    ids = {e["image_id"] for e in good} | set(pills) - {"ansi"}
    outcome = await wait_for_rows(settings, ids, timeout_s=120)
    assert {k: outcome[k] for k in pills if k != "ansi"} == {k: "invalid_event" for k in pills if k != "ansi"}
    assert all(outcome[e["image_id"]] == "ok" for e in good)
    dead = await fetch_dead_letters(settings)
    assert len(dead) == len(pills) and all(len(d["raw"]) <= 64 * 1024 for d in dead)
    dlq = await read_topic(settings.broker_url, settings.dlq_topic, expected=len(pills))
    huge = next(d for d in dlq if d["image_id"] == "huge")
    assert huge["event"] is None and huge["event_raw"]["truncated"] and huge["event_raw"]["bytes"] > 800_000
    assert base64.b64decode(huge["event_raw"]["base64"]).startswith(b'{"listing_id":"poison"')
    assert "SECRET-PAYLOAD" not in worker.log(), "a log line carries an event's payload"
    await wait_for_zero_lag(settings)
    topics = await check_topics(settings)
    assert dead_letter_kinds(topics[settings.dlq_topic]) == {"invalid_event": len(pills)}
    assert worker.proc.poll() is None


async def wait_for_zero_lag(settings: Settings, timeout_s: float = 30) -> None:
    """The consumer group's committed offsets reach the end of every partition of the input topic."""
    lag: dict[int, int] = {}
    for _ in range(int(timeout_s / 0.5)):
        lag = await group_lag(settings.broker_url, settings.consumer_group, settings.input_topic)
        if lag and not any(lag.values()):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"partitions still lag behind: {lag}")


async def test_a_row_postgres_refuses_becomes_storage_rejected_and_its_neighbours_are_stored(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    store = PostgresStore(settings.postgres_dsn, settings.postgres_table)
    await store.start()
    try:
        await store.migrate()  # a constraint stands in for any value Postgres refuses for good
        await store.pool.execute(
            f"ALTER TABLE \"{settings.postgres_table}\" ADD CONSTRAINT refused CHECK (image_id <> 'refused')"
        )
    finally:
        await store.close()
    settings = settings.with_overrides(topic_partitions=1, store_batch_delay_ms=300)
    names = sorted(jpegs)[:6]
    events = [event(f"row-{i}", image_server.url(n), index=i) for i, n in enumerate(names)]
    events.insert(3, event("refused", image_server.url(names[0]), index=9))
    worker = start_worker(settings)
    await produce(settings, events)
    await worker.ready()
    outcome = await wait_for_rows(settings, {e["image_id"] for e in events}, timeout_s=90)
    assert outcome.pop("refused") == "storage_rejected"
    assert set(outcome.values()) == {"ok"}
    await wait_for_zero_lag(settings)
    topics = await check_topics(settings)
    assert dead_letter_kinds(topics[settings.dlq_topic]) == {"storage_rejected": 1}


async def test_the_topics_last_record_per_image_agrees_with_postgres_whatever_the_finish_order(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    settings = settings.with_overrides(topic_partitions=1, redis_url="")
    names = sorted(jpegs)
    now = datetime.now(UTC).replace(microsecond=0)
    events = []
    for i in range(8):  # the newer event first, then the older one for the same image
        for age, name in ((0, names[i]), (60, names[i + 8])):
            e = event(f"ooo-{i}", image_server.url(name), index=i)
            e["event_time"] = (now - timedelta(seconds=age)).isoformat()
            events.append(e)
    worker = start_worker(settings)
    await produce(settings, events)
    await worker.ready()
    await wait_for_rows(settings, {f"ooo-{i}" for i in range(8)})
    await wait_for_zero_lag(settings)
    rows = {r["image_id"]: r for r in await fetch_rows(settings)}
    last: dict[str, dict[str, object]] = {}
    for record in await read_topic(settings.broker_url, settings.output_topic, timeout_s=3):
        last[str(record["image_id"])] = record
    for image_id, row in rows.items():
        assert row["url"] == image_server.url(names[int(image_id.split("-")[1])]), "the older event won in Postgres"
        assert last[image_id]["url"] == row["url"], f"the topic's last word on {image_id} is not Postgres's"


def classification(image_id: str, version: str, when: datetime) -> Classification:
    ev = ImageEvent(image_id=image_id, listing_id="versions", url="http://example.com/a.jpg", event_time=when)
    return Classification(
        ev, Envelope(b"{}"), False, 0.1, 0.5, "front", {"front": 1.0}, "m", version, "sha256:x", 10, 10, when
    )


async def test_model_versions_compare_as_numbers_in_postgres_and_in_memory(stack_urls: StackUrls) -> None:
    assert version_key("2026.11.30.10") > version_key("2026.11.30.9") and "2026.11.30.10" < "2026.11.30.9"
    when = datetime(2026, 11, 30, tzinfo=UTC)
    table = f"versions_{datetime.now().microsecond}"
    postgres = PostgresStore(stack_urls.postgres_dsn, table)
    await postgres.start()
    try:
        await postgres.migrate()
        for store in (postgres, MemoryStore()):
            assert await store.write([classification("v", "2026.11.30.9", when)]) == {"v"}
            assert await store.write([classification("v", "2026.11.30.10", when)]) == {"v"}
            assert await store.write([classification("v", "2026.11.30.9", when)]) == set(), "build 9 replaced 10"
            assert await store.write([classification("v", "2026.11.30.10", when)]) == {"v"}  # a replay re-applies
        assert [r["model_version"] for r in await postgres.fetch_all()] == ["2026.11.30.10"]
    finally:
        await postgres.pool.execute(f'DROP TABLE "{table}"')
        await postgres.close()


async def test_after_a_rollback_the_later_promotion_wins_whatever_the_version(stack_urls: StackUrls) -> None:
    when = datetime(2026, 11, 30, tzinfo=UTC)
    old, bad, rolled_back = (
        classification("r", "2026.11.30.9", when),
        classification("r", "2026.12.1.1", when),
        classification("r", "2026.11.30.9", when),
    )
    old.model_generation, bad.model_generation, rolled_back.model_generation = 1, 2, 3
    table = f"generations_{datetime.now().microsecond}"
    postgres = PostgresStore(stack_urls.postgres_dsn, table)
    await postgres.start()
    try:
        await postgres.migrate()
        for store in (postgres, MemoryStore()):
            assert await store.write([old]) == {"r"}
            assert await store.write([bad]) == {"r"}
            assert await store.write([old]) == set(), "an earlier promotion replaced a later one"
            assert await store.write([rolled_back]) == {"r"}, "the rollback's result lost to a higher version"
            assert await store.write([bad]) == set(), "the withdrawn model's late result came back"
            assert await store.write([rolled_back]) == {"r"}  # a replay re-applies
            assert await store.write([bad, rolled_back]) == {"r"}  # one batch: the same order
        row = (await postgres.fetch_all())[0]
        assert (row["model_version"], row["model_generation"]) == ("2026.11.30.9", 3)
        newer = classification("r", "2026.12.1.1", when + timedelta(seconds=1))  # a newer event still wins
        assert await postgres.write([newer]) == {"r"}
    finally:
        await postgres.pool.execute(f'DROP TABLE "{table}"')
        await postgres.close()


@pytest.mark.parametrize(
    ("event_time", "expected"),
    [
        ("2026-11-30T12:00:00+02:00", "2026-11-30T10:00:00+00:00"),
        ("0001-01-01T00:00:00+14:00", None),
        ("9999-12-31T23:59:59-05:00", None),
        ("9999-12-31T23:59:59Z", None),
        ("1990-01-01T00:00:00Z", None),
    ],
)
def test_event_time_is_normalised_to_utc_and_bounded(event_time: str, expected: str | None) -> None:
    raw = orjson.dumps({"image_id": "t", "listing_id": "l", "url": "http://x/", "event_time": event_time})
    limits = EventLimits(max_past=timedelta(days=3650))
    if expected is None:
        with pytest.raises(InvalidEvent, match="event_time"):
            parse_event(raw, limits)
        return
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()  # in the window whatever the time of day
    parsed = parse_event(raw.replace(b"2026-11-30", yesterday.isoformat().encode()), limits)
    assert parsed.event_time is not None and parsed.event_time.utcoffset() == timedelta(0)
    assert parsed.event_time.isoformat().endswith(expected[10:])


@pytest.mark.parametrize("bad_id", ["a\x1b[31mb", "line\nbreak", "bidi\u202eevil", "zero\u200bwidth", "del\x7f"])
def test_control_and_format_characters_in_ids_are_refused(bad_id: str) -> None:
    raw = orjson.dumps({"image_id": bad_id, "listing_id": "l", "url": "http://x/"})
    with pytest.raises(InvalidEvent, match="image_id"):
        parse_event(raw, EventLimits())


def test_a_dead_letter_of_any_event_serialises_and_stays_small() -> None:
    for name, raw in poison_pills().items():
        record = orjson.dumps(DeadLetter(Envelope(raw, "images", 0, 1), "invalid_event", "x" * 10_000).to_output())
        assert len(record) < 40_000, name


async def test_a_corrupt_cache_value_is_a_miss(stack_urls: StackUrls) -> None:
    cache = ResultCache(stack_urls.redis_url, 60)
    model = f"corrupt-{datetime.now().microsecond}"
    await cache.start()
    try:
        url = "http://example.com/corrupt.jpg"
        assert cache._client is not None
        for garbage in (b"not json", b'{"h": "x"}', b"[1, 2]", b'{"h": 1, "b": "x", "p": 3, "w": 1, "ht": 1}'):
            await cache._client.set(cache.url_key(url, model), garbage)
            assert await cache.get_url(url, model) is None
    finally:
        await cache.close()


class RejectingPublisher:
    """A broker that refuses output records of one image as too large, like MessageSizeTooLargeError."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def publish(self, records: Sequence[Record]) -> None:
        if any(r.topic == "out" and b'"too-big"' in (r.value or b"") for r in records):
            raise type("MessageSizeTooLargeError", (Exception,), {})("record too large")
        self.records.extend(records)


async def test_a_record_the_broker_refuses_becomes_a_dead_letter_and_the_batch_goes_on() -> None:
    assert rejects_item(type("MessageSizeTooLargeError", (Exception,), {})())
    store, publisher = MemoryStore(), RejectingPublisher()
    sink = Sink(store, publisher, MemoryCache(), SinkTopics("out", "dlq", "removals"), 16, 0.05, item_attempts=2)
    sink.start()
    when = datetime.now(UTC)
    try:
        outcomes = await asyncio.gather(
            *(sink.submit(classification(i, "1", when)) for i in ("a", "too-big", "b", "c"))
        )
    finally:
        await sink.stop()
    assert [type(o).__name__ for o in outcomes] == ["Classification", "DeadLetter", "Classification", "Classification"]
    assert isinstance(outcomes[1], DeadLetter) and outcomes[1].kind == "storage_rejected"
    published = [(r.topic, orjson.loads(r.value or b"{}").get("image_id")) for r in publisher.records]
    assert ("dlq", "too-big") in published and {i for t, i in published if t == "out"} == {"a", "b", "c"}
    assert [d.kind for d in store.dead] == ["storage_rejected"]


async def test_a_database_outage_waits_and_loses_nothing() -> None:
    store = MemoryStore(failures=3)
    sink = Sink(store, RejectingPublisher(), MemoryCache(), SinkTopics("out", "dlq", "r"), 16, 0.01)
    sink.start()
    try:
        outcome = await sink.submit(classification("x", "1", datetime.now(UTC)))
    finally:
        await sink.stop()
    assert isinstance(outcome, Classification) and set(store.rows) == {"x"} and not store.dead


async def test_a_partition_over_its_budget_pauses_and_resumes_until_everything_is_stored(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    """A budget of two unacked events per partition: the consumer pauses and resumes the partition
    many times (with Faust's own partition objects), and nothing stalls."""
    settings = settings.with_overrides(topic_partitions=1, max_unacked_per_partition=2, broker_commit_interval_s=0.2)
    image_server.latency_s = 0.05
    events = [event(f"budget-{i}", image_server.url(n) + f"?b={i}", index=i) for i, n in enumerate(sorted(jpegs))]
    worker = start_worker(settings)
    await produce(settings, events)
    await worker.ready()
    await wait_for_rows(settings, {e["image_id"] for e in events}, timeout_s=90)
    await wait_for_zero_lag(settings)
    assert "flow control" not in worker.log(), worker.log()[-3000:]
