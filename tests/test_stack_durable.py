"""The durable embedded broker (``processor stack --durable``): killed with SIGKILL and started again, it
still has its topics, records and the consumer group's committed offsets, and takes new records."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from processor.dev.stack import EmbeddedStack
from processor.topics import bootstrap, ensure_topics, produce_lines, read_topic


@pytest.fixture
def durable_stack() -> Iterator[EmbeddedStack]:
    with EmbeddedStack(durable=True) as stack:
        yield stack


async def committed(broker_url: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(broker_url), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def test_a_killed_durable_broker_comes_back_with_records_and_committed_offsets(
    durable_stack: EmbeddedStack,
) -> None:
    assert durable_stack.urls is not None
    url, topic, group = durable_stack.urls.broker_url, "durable-images", "durable-group"
    await ensure_topics(url, [topic], 1)
    assert await produce_lines(url, topic, [b'{"n": %d}' % i for i in range(10)]) == 10
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(url), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(6, "")})
    finally:
        await consumer.stop()

    durable_stack.kill_broker()
    assert not durable_stack.broker_alive()
    durable_stack.start_broker()

    assert await committed(url, group, tp) == 6
    assert await produce_lines(url, topic, [b'{"n": 10}']) == 1
    assert [r["n"] for r in await read_topic(url, topic, expected=11)] == list(range(11))
