"""The worker's link to the broker: readiness that tells the truth, a log that speaks once per state
change, and offset commits whose failures follow the project's rules.

- ``BrokerWatch`` asks the broker for its metadata every ``broker_probe_interval_s``; readiness is
  false while it does not answer, and the log says so once when it goes away and once when it is back.
- ``ClientLogGate`` is a logging filter on the Kafka client's loggers (aiokafka, faust): each kind of
  warning (logger and message template, never the wording) passes once per broker state, or again
  after ``REPEAT_WINDOW_S``; what it held back is counted and said in one line. An outage logs a handful
  of lines instead of thousands.
- ``commit_failure`` decides what a failed offset commit means, by the error's type: the group moved on
  (``rebalanced``), the partition is no longer ours (``not_assigned``), the broker is unavailable for now
  (``unavailable``: any retriable Kafka error), it refused for another reason (``refused``), or a fault
  that must stop the worker (authorization, or not a Kafka error at all: a bug). Only the last is fatal.
  Faust 0.15.3 instead survives a refused commit only when aiokafka's message contains the words
  "already rebalanced" and crashes on any other; and it marks offsets committed even when the commit
  failed, so a partition without new events would never be committed again. ``GuardedCommits`` fixes
  both: a failed commit keeps the acked offsets pending, and the next commit interval retries them.
  Nothing is lost either way: uncommitted work is replayed (at-least-once), and a replay stores the
  same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    CommitFailedError,
    GroupAuthorizationFailedError,
    IllegalStateError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from aiokafka.structs import OffsetAndMetadata
from faust.transport.drivers.aiokafka import ensure_aiokafka_TP

from .health import WorkerHealth
from .metrics import BROKER_OUTAGES, BROKER_UP, CLIENT_LOG_HELD, COMMIT_FAILURES
from .settings import Settings
from .topics import bootstrap

log = logging.getLogger(__name__)
CLIENT_LOGGERS = ("aiokafka", "faust")
_DIGITS = re.compile(r"\d+")
REPEAT_WINDOW_S = 300.0  # a kind of client warning held back passes again after this long

FATAL = "fatal"


def commit_failure(exc: BaseException) -> str:
    """The reason a commit failed, by the error's type; ``FATAL`` when the worker must stop."""
    if isinstance(exc, GroupAuthorizationFailedError | TopicAuthorizationFailedError):
        return FATAL  # misconfiguration: nothing will commit until someone fixes it
    if isinstance(exc, CommitFailedError):
        return "rebalanced"
    if isinstance(exc, IllegalStateError):
        return "not_assigned"
    if isinstance(exc, KafkaError):
        return "unavailable" if exc.retriable else "refused"
    if isinstance(exc, asyncio.TimeoutError | ConnectionError | OSError):
        return "unavailable"
    return FATAL


class ClientLogGate(logging.Filter):
    """Passes each kind of Kafka-client warning once per broker state (or per ``window_s``); counts the rest."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self._window_s = window_s
        self._lock = threading.Lock()  # the consumer logs from its own thread
        self._passed: dict[tuple[str, str], float] = {}
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        verdict = getattr(record, "_client_gate", None)  # one record may meet the gate twice (logger, handler)
        if verdict is None:
            verdict = self._judge(record)
            record._client_gate = verdict
        return bool(verdict)

    def _judge(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(CLIENT_LOGGERS):
            return True
        key = (record.name, _DIGITS.sub("#", str(record.msg)))  # Faust formats its numbers into msg
        now = time.monotonic()
        with self._lock:
            last = self._passed.get(key)
            if last is not None and now - last < self._window_s:
                self._held += 1
                CLIENT_LOG_HELD.inc()
                return False
            self._passed[key] = now
        return True

    def reset(self) -> int:
        """Start a new state: every kind may pass once more. Returns how many lines were held back."""
        with self._lock:
            held, self._held = self._held, 0
            self._passed.clear()
        return held

    def install(self) -> None:
        """Gate the client's loggers and every handler (a filter on a logger does not see its children's
        records, and a logger that does not propagate has handlers of its own). Idempotent: the watch calls
        it at every probe, so handlers set up later are gated too."""
        loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
        for each in loggers:
            if not isinstance(each, logging.Logger):
                continue
            if each.name.startswith(CLIENT_LOGGERS) and self not in each.filters:
                each.addFilter(self)
            for handler in each.handlers:
                if self not in handler.filters:
                    handler.addFilter(self)


@dataclass
class BrokerWatch:
    """Probes the broker; keeps ``health.broker_ok`` and ``processor_broker_up`` true to what it sees."""

    settings: Settings
    health: WorkerHealth
    gate: ClientLogGate = field(default_factory=ClientLogGate)
    _client: AIOKafkaClient | None = None
    _down_since: float | None = None
    _reason: str = ""

    async def run(self) -> None:
        """Probe until cancelled (the worker's lifetime)."""
        self.gate.install()
        BROKER_UP.set(1 if self.health.broker_ok else 0)
        try:
            while True:
                self.gate.install()
                await self.probe()
                await asyncio.sleep(self.settings.broker_probe_interval_s)
        finally:
            await self._close()

    async def probe(self) -> bool:
        """One metadata request with a deadline; records the state and says when it changed."""
        try:
            async with asyncio.timeout(self.settings.broker_probe_timeout_s):
                if self._client is None:
                    self._client = AIOKafkaClient(
                        bootstrap_servers=bootstrap(self.settings.broker_url),
                        request_timeout_ms=int(self.settings.broker_probe_timeout_s * 1000),
                        client_id="processor-broker-probe",
                    )
                    await self._client.bootstrap()
                await self._client.fetch_all_metadata()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure to answer is an outage; its type says which
            await self._close()  # a fresh client (and connection) next time
            self._went_down(str(exc) or type(exc).__name__)
            return False
        self._came_back()
        return True

    def _went_down(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._reason = reason
            self.health.broker_ok = False
            BROKER_UP.set(0)
            BROKER_OUTAGES.inc()
            log.error(
                "broker unreachable (%s): readiness is false, events wait unacknowledged; "
                "repeated client errors are counted in processor_client_log_lines_held_total",
                reason,
            )

    def _came_back(self) -> None:
        if not self.health.broker_ok or self._down_since is not None:
            down_s = time.monotonic() - self._down_since if self._down_since is not None else 0.0
            held = self.gate.reset()
            if self._down_since is not None:
                log.warning(
                    "broker reachable again after %.1f s (%d repeated client log lines held back)", down_s, held
                )
            self._down_since = None
        self.health.broker_ok = True
        BROKER_UP.set(1)

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a client of a dead broker may fail; it is gone either way
                await client.close()


class CommitLog:
    """Says commit failures once per reason and once when commits resume."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: str | None = None
        self._failures = 0
        self._since = 0.0

    def failed(self, reason: str, exc: BaseException) -> None:
        COMMIT_FAILURES.labels(reason=reason).inc()
        with self._lock:
            self._failures += 1
            if self._failing == reason:
                return
            if self._failing is None:
                self._since = time.monotonic()
            self._failing = reason
        log.warning(
            "offset commit failed (%s: %s): the acked offsets stay pending and are committed at a later "
            "interval; uncommitted work is replayed if the partition moves",
            reason,
            type(exc).__name__,
        )

    def succeeded(self) -> None:
        with self._lock:
            if self._failing is None:
                return
            failures, since = self._failures, self._since
            self._failing, self._failures = None, 0
        log.info("offset commits resumed after %d failed attempts over %.1f s", failures, time.monotonic() - since)


COMMITS = CommitLog()


async def guarded_commit(thread: Any, offsets: Mapping[Any, int]) -> bool:
    """The body of the consumer thread's commit: commit what is still assigned; a failure returns False
    and is logged and counted by ``commit_failure``'s reason; only a fatal one crashes the worker."""
    consumer = thread._ensure_consumer()
    assigned = thread.assignment()
    committable = {tp: offset for tp, offset in offsets.items() if tp in assigned}
    if not committable:
        return False
    try:
        await consumer.commit({ensure_aiokafka_TP(tp): OffsetAndMetadata(o, "") for tp, o in committable.items()})
    except Exception as exc:  # classified by type below; never by its message
        reason = commit_failure(exc)
        COMMITS.failed(reason, exc)
        if reason == FATAL:
            log.error("offset commit failed for good; stopping the worker: %r", exc)
            await thread.crash(exc)
        return False
    thread.tp_last_committed_at.update(dict.fromkeys(committable, time.monotonic()))
    COMMITS.succeeded()
    return True


def keep_pending_after_failure(
    consumer: Any, offsets: Mapping[Any, int], committed: bool, before: dict[Any, Any]
) -> None:
    """Faust records offsets as committed even when the commit failed; put the old ones back, so the next
    interval commits them again instead of waiting for a newer ack on the partition."""
    if committed:
        return
    for tp in offsets:
        consumer._committed_offset[tp] = before.get(tp)
