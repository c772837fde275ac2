"""The consumer's fetch wait (#25): short at the log end, longer while a partition is behind it, so a
partition behind its log end on Tansu's S3 storage catches up (with 50 ms every fetch came back nearly
empty and two partitions of the slow-cdn and slow-network fault scenarios never caught up)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from processor.dev.stack import EmbeddedStack
from processor.fetchwait import FetchWait, adapt_fetch_wait, lagging
from processor.topics import bootstrap, ensure_topics

BACKLOG = 400  # records, one batch each: on S3 each is an object of its own


@dataclass
class State:
    position: int | None
    highwater: int | None
    paused: bool = False

    @property
    def has_valid_position(self) -> bool:
        return self.position is not None


@dataclass
class Assignment:
    states: dict[str, State] = field(default_factory=dict)

    @property
    def tps(self) -> list[str]:
        return list(self.states)

    def state_value(self, tp: str) -> State:
        return self.states[tp]


@pytest.mark.parametrize(
    ("state", "pending", "expected"),
    [
        (State(10, 10), (), {}),  # at the log end
        (State(7, 10), (), {"a": 7}),
        (State(7, 10), ("a",), {}),  # records fetched and not consumed yet: not in the next fetch
        (State(7, 10, paused=True), (), {}),
        (State(None, 10), (), {}),  # no position yet (being reset)
        (State(0, None), (), {}),  # never fetched
    ],
)
def test_lagging_counts_only_partitions_the_next_fetch_asks_for(
    state: State, pending: tuple[str], expected: dict[str, int]
) -> None:
    assert lagging(Assignment({"a": state, "b": State(5, 5)}), pending) == expected


def test_the_wait_doubles_while_the_broker_runs_out_of_it_and_resets_once_caught_up() -> None:
    wait = FetchWait(50, 500, 4000)
    partition = State(3, 3)
    assignment = Assignment({"a": partition})
    assert wait.choose(assignment, ()) == (50, False)
    partition.highwater = 900  # fell behind
    assert wait.choose(assignment, ()) == (500, True)
    wait.fetched(500, True, 0.5)  # took its whole wait: cut short by the broker's deadline
    assert wait.choose(assignment, ()) == (1000, True)
    wait.fetched(500, True, 0.5)  # a fetch sent before the change does not count twice
    assert wait.wait_ms == 1000
    for _ in range(5):
        wait.fetched(wait.wait_ms, True, wait.wait_ms / 1000)
    assert wait.wait_ms == 4000  # never past max_ms
    wait.fetched(4000, True, 0.2)  # answered well within it: halve
    assert wait.wait_ms == 2000
    wait.fetched(2000, False, 2.0)  # a fetch at the log end waits for new records: it says nothing
    assert wait.wait_ms == 2000
    assert wait.choose(assignment, ("a",)) == (50, False)  # records fetched, not consumed: keep the wait
    assert wait.wait_ms == 2000
    partition.position = 900  # caught up: short, and the next lag starts from behind_ms
    assert wait.choose(assignment, ()) == (50, False)
    partition.highwater = 901
    assert wait.choose(assignment, ()) == (500, True)


async def test_the_fetcher_asks_for_the_chosen_wait_and_reports_how_long_it_took() -> None:
    class Fetcher:
        _fetch_max_wait_ms = 1500
        _records: dict[str, Any] = {}

        def _get_actions_per_node(self, assignment: Assignment) -> tuple[list[tuple[int, object]], int]:
            return [(1, object())], self._fetch_max_wait_ms

        async def _proc_fetch_request(self, assignment: Assignment, node_id: int, request: object) -> bool:
            return True

    fetcher = Fetcher()
    wait = FetchWait(50, 500, 4000)
    reports: list[tuple[int, bool]] = []
    wait.fetched = lambda wait_ms, behind, elapsed_s: reports.append((wait_ms, behind))  # type: ignore[method-assign]
    adapt_fetch_wait(fetcher, wait)
    assignment = Assignment({"a": State(3, 3)})
    assert fetcher._get_actions_per_node(assignment)[1] == 50
    assignment.states["a"].highwater = 9
    [(node, request)], asked = fetcher._get_actions_per_node(assignment)
    assert asked == 500
    assert await fetcher._proc_fetch_request(assignment, node, request)
    assert reports == [(500, True)]
    fetcher._records["a"] = object()
    assert fetcher._get_actions_per_node(assignment)[1] == 50


@pytest.fixture
def durable_stack() -> Iterator[EmbeddedStack]:
    with EmbeddedStack(durable=True) as stack:
        yield stack


async def test_a_backlog_on_tansu_s3_is_read(durable_stack: EmbeddedStack) -> None:
    """A consumer that starts behind the log end with the short wait alone (behind_ms = short_ms = 50) reads
    the backlog once its wait has grown; 50 ms alone read about a record in two seconds here (#25)."""
    assert durable_stack.urls is not None
    url, topic = durable_stack.urls.broker_url, "fetchwait-backlog"
    await ensure_topics(url, [topic], 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(url))
    await producer.start()
    try:
        for n in range(BACKLOG):
            await producer.send_and_wait(topic, b"%d" % n, partition=0)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(url), enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    adapt_fetch_wait(consumer._fetcher, FetchWait(50, 50, 3200))
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, 0)
    seen: list[bytes] = []
    try:
        async with asyncio.timeout(120):  # a hang guard, far above what the read takes
            while len(seen) < BACKLOG:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                seen += [record.value or b"" for record in batch.get(tp, [])]
    finally:
        await consumer.stop()
    assert seen == [b"%d" % n for n in range(BACKLOG)]
