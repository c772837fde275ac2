"""The worker's link to the broker (#25): commit failures decided by the error's type, a log gate that
lets each kind of client warning through once per broker state, readiness false while the broker is
away, liveness that does not restart a worker for an outage, and, live, a durable broker killed with
SIGKILL mid-stream: readiness goes false and comes back, the worker stays up, the log says it in a
few lines, every event is stored and the lag ends at zero."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Iterator

import pytest
from aiokafka.errors import (
    CommitFailedError,
    GroupAuthorizationFailedError,
    IllegalStateError,
    KafkaConnectionError,
    NotCoordinatorForGroupError,
    OffsetMetadataTooLargeError,
    RequestTimedOutError,
)
from pydantic import ValidationError

from processor.brokerlink import FATAL, ClientLogGate, commit_failure, keep_pending_after_failure
from processor.dev.harness import isolated_settings
from processor.dev.imageserver import ImageServer
from processor.dev.stack import EmbeddedStack
from processor.health import WorkerHealth
from processor.settings import Settings

from .conftest import event
from .helpers import wait_for_rows
from .test_end_to_end import produce
from .test_poison import wait_for_zero_lag


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (CommitFailedError("the group has already rebalanced"), "rebalanced"),
        (CommitFailedError("any other wording"), "rebalanced"),
        (IllegalStateError("not assigned"), "not_assigned"),
        (KafkaConnectionError("closed"), "unavailable"),
        (RequestTimedOutError(), "unavailable"),
        (NotCoordinatorForGroupError(), "unavailable"),
        (OffsetMetadataTooLargeError(), "refused"),
        (GroupAuthorizationFailedError(), FATAL),
        (TimeoutError(), "unavailable"),
        (KeyError("a bug"), FATAL),
    ],
)
def test_a_commit_failure_is_judged_by_its_type_not_its_message(exc: BaseException, reason: str) -> None:
    assert commit_failure(exc) == reason


class _Consumer:
    def __init__(self) -> None:
        self._committed_offset: dict[str, int | None] = {"a": 5, "b": 9}


def test_a_failed_commit_leaves_its_offsets_pending() -> None:
    consumer = _Consumer()
    before = dict(consumer._committed_offset)
    consumer._committed_offset.update({"a": 8, "b": 12})  # what Faust records, committed or not
    keep_pending_after_failure(consumer, {"a": 8, "b": 12}, False, before)
    assert consumer._committed_offset == {"a": 5, "b": 9}
    consumer._committed_offset.update({"a": 8})
    keep_pending_after_failure(consumer, {"a": 8}, True, {"a": 5})
    assert consumer._committed_offset["a"] == 8


def test_the_gate_lets_each_kind_of_client_warning_through_once_per_state() -> None:
    gate = ClientLogGate(window_s=3600)

    def record(name: str, msg: str, level: int = logging.ERROR, *args: object) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, args, None)

    connect = "Unable connect to node with id %s: %s"
    assert gate.filter(record("aiokafka.conn", connect, logging.ERROR, 1, "refused"))
    assert not any(gate.filter(record("aiokafka.conn", connect, logging.ERROR, 1, f"try {i}")) for i in range(500))
    assert gate.filter(record("aiokafka.client", "Unable to update metadata from %s"))  # another kind
    assert gate.filter(record("aiokafka.conn", "connected", logging.INFO))  # below WARNING: never held
    assert gate.filter(record("processor.sink", connect))  # not the Kafka client's: never held
    twice = record("aiokafka.client", "Unable to update metadata from %s")
    assert gate.filter(record("aiokafka.client", "Heartbeat failed")) is True
    assert not gate.filter(twice) and not gate.filter(twice)  # a record judged once, on a logger and a handler
    slow = "[^---ConsumerThread]: Stream stopped processing for TP (last inbound %s minutes ago)."
    assert gate.filter(record("faust.transport.consumer", slow % "5.00"))  # Faust formats its numbers in
    assert not gate.filter(record("faust.transport.consumer", slow % "5.04"))
    assert gate.reset() == 502
    assert gate.filter(record("aiokafka.conn", connect, logging.ERROR, 1, "refused"))  # a new state


def test_readiness_needs_the_broker_and_an_outage_does_not_fail_liveness() -> None:
    health = WorkerHealth(liveness_stall_s=1.0, model_loaded=True, postgres_ok=True, assignments=1)
    assert health.ready()[0] is False and health.ready()[1]["broker"] is False
    health.broker_ok = True
    assert health.ready()[0] is True
    health.oldest_unacked_s, health.last_progress = 10.0, time.monotonic() - 10
    assert health.live()[0] is False  # stalled with every service up: a restart may help
    health.broker_ok = False
    assert health.live()[0] is True  # waiting for the broker: a restart would not bring it back
    health.broker_ok, health.postgres_ok = True, False
    assert health.live()[0] is True


def test_the_session_timeout_cannot_outlast_the_request_timeout() -> None:
    with pytest.raises(ValidationError):
        Settings(broker_session_timeout_s=20, broker_request_timeout_s=10)
    assert Settings().producer_request_timeout_s == 30.0


@pytest.fixture
def durable_stack() -> Iterator[EmbeddedStack]:
    with EmbeddedStack(durable=True) as stack:
        yield stack


async def test_a_broker_killed_mid_stream_turns_readiness_false_and_loses_nothing(
    durable_stack: EmbeddedStack, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    assert durable_stack.urls is not None
    settings = isolated_settings(
        durable_stack.urls,
        "broker-kill",
        topic_partitions=4,
        broker_probe_interval_s=0.5,
        producer_request_timeout_s=5,
        broker_request_timeout_s=10,
        shutdown_grace_s=5,
    )
    names = sorted(jpegs)
    events = [event(f"bk-{i}", image_server.url(names[i % len(names)]) + f"?v={i}", f"l-{i % 9}") for i in range(60)]
    await produce(settings, events[:30])
    worker = start_worker(settings)
    await worker.ready()
    await wait_for_rows(settings, {e["image_id"] for e in events[:30]})

    durable_stack.kill_broker()
    deadline = time.monotonic() + 15
    while worker.probe()[0] != 503:
        assert time.monotonic() < deadline, "readiness stayed true without a broker"
        await asyncio.sleep(0.2)
    assert worker.probe()[1]["broker"] is False
    await asyncio.sleep(8)
    durable_stack.start_broker()
    await produce(settings, events[30:])
    await worker.ready(timeout_s=60)

    await wait_for_rows(settings, {e["image_id"] for e in events}, timeout_s=90)
    await wait_for_zero_lag(settings, timeout_s=60)
    assert worker.proc.poll() is None, "the worker exited"
    text = worker.log()
    assert text.count("broker unreachable") == 1 and text.count("broker reachable again") == 1
    client_errors = [line for line in text.splitlines() if "[ERROR]" in line or "[WARNING]" in line]
    assert len(client_errors) < 40, "\n".join(client_errors[-40:])
    worker.stop(signal.SIGTERM)
