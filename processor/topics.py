"""Plain aiokafka helpers for the CLI, the demo and tests: create topics, produce, read back.

``topic_configs`` is the one place topic configurations come from: `processor topics create` (the
compose one-shot and the Kubernetes Job run it), a worker creating its own topics, and Faust's
declarations all use it. ``listing-updates`` is the only table-like topic: compacted, so the last
state of every listing stays readable however old, and a tombstone (null value) deletes a listing.
Every other topic is a stream with ``retention.ms``. (``image-classifications`` cannot be compacted:
its key is the listing, so compaction would keep one image per listing.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

if TYPE_CHECKING:
    from .settings import Settings
    from .sink import Record

TopicConfigs = Mapping[str, Mapping[str, str]]  # topic -> Kafka topic configuration


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """The configuration of every topic the workers read and write (module docstring)."""
    stream = {"cleanup.policy": "delete", "retention.ms": str(settings.topic_retention_ms)}
    configs = {topic: dict(stream) for topic in settings.topics}
    table = {"cleanup.policy": "compact"}
    if settings.topic_retention_ms >= 0:
        # How long a tombstone stays readable: a subscriber away for longer must bootstrap again.
        table["delete.retention.ms"] = str(settings.topic_retention_ms)
    configs[settings.listing_updates_topic] = table
    return configs


def bootstrap(broker_url: str) -> str:
    """``kafka://a:9092;b:9092`` (Faust style) -> ``a:9092,b:9092`` (aiokafka style)."""
    hosts = []
    for part in broker_url.replace(";", ",").split(","):
        part = part.strip()
        hosts.append(part.split("://", 1)[1] if "://" in part else part)
    return ",".join(h for h in hosts if h)


async def ensure_topics(
    broker_url: str,
    topics: Iterable[str],
    partitions: int,
    replication_factor: int = 1,
    retention_ms: int | None = None,
    configs: TopicConfigs | None = None,
) -> list[str]:
    """Create missing topics (existing ones are left as they are: see ``config_drift``); return the
    names created. A topic in ``configs`` gets that configuration, any other ``retention_ms``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(broker_url))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        default = {"retention.ms": str(retention_ms)} if retention_ms is not None else {}
        missing = [
            NewTopic(t, partitions, replication_factor, topic_configs=dict((configs or {}).get(t, default)))
            for t in topics
            if t not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()


async def describe_topics(broker_url: str, topics: Iterable[str]) -> dict[str, dict[str, str]]:
    """The configuration the broker reports for each topic (those set on it, at least)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(broker_url))
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        found: dict[str, dict[str, str]] = {}
        for response in await admin.describe_configs(resources):
            for _error, _message, _type, name, entries in response.resources:
                found[name] = {entry[0]: entry[1] for entry in entries}
        return found
    finally:
        await admin.close()


async def config_drift(broker_url: str, configs: TopicConfigs) -> dict[str, dict[str, tuple[str | None, str]]]:
    """Per topic, the settings whose value on the broker differs from ``configs``: (actual, wanted).
    Existing topics are never altered here (AlterConfigs would reset what an operator set by hand)."""
    actual = await describe_topics(broker_url, configs)
    drift = {}
    for topic, wanted in configs.items():
        have = actual.get(topic, {})
        differing = {k: (have.get(k), v) for k, v in wanted.items() if have.get(k) != v}
        if differing:
            drift[topic] = differing
    return drift


def event_key(line: bytes) -> bytes | None:
    """The listing_id key of a JSON event, or None for anything that is not one."""
    try:
        listing = orjson.loads(line).get("listing_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return listing.encode() if isinstance(listing, str) else None


async def produce_lines(broker_url: str, topic: str, lines: Iterable[bytes]) -> int:
    """Send each line as one event keyed by listing_id; return how many the broker confirmed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(broker_url), acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, line, key=event_key(line)) for line in lines if line.strip()]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


class KafkaPublisher:
    """A plain aiokafka producer as a sink Publisher: returns once the broker confirmed every record."""

    def __init__(self, broker_url: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap(broker_url), acks="all", linger_ms=5)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, records: Sequence[Record]) -> None:
        futures = [await self._producer.send(r.topic, r.value, key=r.key, headers=list(r.headers)) for r in records]
        await asyncio.gather(*futures)


async def group_lag(broker_url: str, group: str, topic: str, idle_s: float = 1.0) -> dict[int, int]:
    """Per partition: records between the group's committed offset and the log end.

    The log end is found by reading the partition to its last record, not from ListOffsets: Tansu's
    high watermark counts batches rather than records. Meant for tests and small topics."""
    ends: dict[int, int] = {}
    async for partition, offset in _offsets(broker_url, topic, idle_s):
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(broker_url), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: ends.get(tp.partition, 0) - (await consumer.committed(tp) or 0) for tp in tps}
    finally:
        await consumer.stop()


async def _offsets(broker_url: str, topic: str, idle_s: float) -> AsyncIterator[tuple[int, int]]:
    async for record in _records(broker_url, topic, None, idle_s):
        yield record.partition, record.offset


async def read_topic(
    broker_url: str, topic: str, expected: int | None = None, timeout_s: float = 10.0
) -> list[dict[str, object]]:
    """Read a topic from the beginning (no group) until ``expected`` records or ``timeout_s`` idle;
    tombstones (null values) are left out."""
    return [orjson.loads(value) async for value in iterate_topic(broker_url, topic, expected, timeout_s) if value]


async def read_records(
    broker_url: str, topic: str, expected: int | None = None, timeout_s: float = 10.0
) -> list[ConsumerRecord]:
    """Every record of a topic from the beginning, with its key, headers and (None for a tombstone) value."""
    return [
        ConsumerRecord(r.partition, r.offset, r.key, r.value, tuple(r.headers or ()))
        async for r in _records(broker_url, topic, expected, timeout_s)
    ]


@dataclass(frozen=True, slots=True)
class ConsumerRecord:
    """A record as a subscriber reads it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        return next((v.decode() for k, v in self.headers if k == name), None)


async def iterate_topic(
    broker_url: str, topic: str, expected: int | None, timeout_s: float
) -> AsyncIterator[bytes | None]:
    """Values of a topic from the beginning, until ``expected`` records or ``timeout_s`` without one."""
    async for record in _records(broker_url, topic, expected, timeout_s):
        yield record.value


async def _records(broker_url: str, topic: str, expected: int | None, idle_s: float) -> AsyncIterator[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(broker_url), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await consumer.topics()  # loads metadata
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            return
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        while expected is None or seen < expected:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=1000)
            if not batch:  # idle: the end (end offsets are not trusted, see group_lag)
                return
            for records in batch.values():
                for record in records:
                    seen += 1
                    yield record
    finally:
        await consumer.stop()
