"""Acknowledgement in offset order, per partition, with a budget per partition.

faust-streaming 0.15.3 can commit past a message still in flight when acks arrive
out of order (its issue #606: a gap of one offset is not held back). Here every
partition has one sequential ack stream: an event is acked only after it and every
event before it on its partition are finished, so the acked offsets the consumer
commits from never contain a gap, and a commit never passes unfinished work.

No partition can stall the others. Each has its own budget of unacknowledged events;
a partition over budget parks its next events in a backlog (and asks the consumer to
pause it) while other partitions go on. Work that raises is retried with backoff; after
``attempts`` failures the ``fallback`` runs instead (the worker stores a dead letter), so
a bad event ends as a dead letter rather than holding its partition. The age of each
partition's oldest unacknowledged event is exposed for metrics and stuck-work alarms.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
E = TypeVar("E")
Work = Callable[[], Awaitable[object]]
RETRY_BACKOFF_MAX_S = 30.0


class _Entry(Generic[E]):
    __slots__ = ("done", "item", "since")

    def __init__(self, item: E) -> None:
        self.item = item
        self.done = False
        self.since = time.monotonic()


@dataclass
class _Partition(Generic[E]):
    entries: deque[_Entry[E]] = field(default_factory=deque)  # unacked, in arrival order
    backlog: deque[tuple[E, Work]] = field(default_factory=deque)  # over budget, not started yet
    paused: bool = False


@dataclass(frozen=True, slots=True)
class AckerHooks(Generic[E]):
    """What the acker calls besides the work: ack, and optionally pause/resume a key, describe an item
    for logs (never its payload), and the fallback after ``attempts`` failures."""

    ack: Callable[[E], Awaitable[object]]
    describe: Callable[[E], str] = repr
    pause: Callable[[Hashable], None] | None = None
    resume: Callable[[Hashable], None] | None = None
    fallback: Callable[[E, BaseException], Awaitable[object]] | None = None


class OrderedAcker(Generic[E]):
    """Runs work for items concurrently and acks them strictly in arrival order per key."""

    def __init__(self, hooks: AckerHooks[E], max_in_flight: int, max_unacked_per_key: int, attempts: int = 3) -> None:
        self._hooks = hooks
        self._running = asyncio.Semaphore(max_in_flight)
        self._budget = max_unacked_per_key
        self._attempts = attempts
        self._partitions: dict[Hashable, _Partition[E]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.acked = 0
        self.failed = 0  # attempts that raised
        self._closed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def submit(self, key: Hashable, item: E, work: Work) -> None:
        """Start ``work`` for ``item`` (waiting for a free slot), or park it if its key is over budget.

        It is acked once it and its elders on the same key finish. After ``close()`` this never
        returns: the item stays unacked and is replayed later.
        """
        if self._closed.is_set():
            await asyncio.Future()  # parked until the consumer task is cancelled
        part = self._partitions.setdefault(key, _Partition())
        if part.backlog or len(part.entries) >= self._budget:
            part.backlog.append((item, work))
            if not part.paused and self._hooks.pause is not None:
                part.paused = True
                self._flow(self._hooks.pause, key)
            return
        await self._start(key, part, item, work)

    async def _start(self, key: Hashable, part: _Partition[E], item: E, work: Work) -> None:
        await self._running.acquire()
        if self._closed.is_set():  # closed while waiting for a slot: never start
            self._running.release()
            await asyncio.Future()
        entry = _Entry(item)
        part.entries.append(entry)
        task = asyncio.create_task(self._run(key, part, entry, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Hashable, part: _Partition[E], entry: _Entry[E], work: Work) -> None:
        try:
            await self._attempt(entry, work)
        except asyncio.CancelledError:
            return  # shutdown: never acked, so replayed by whoever owns the partition next
        finally:
            self._running.release()
        entry.done = True
        await self._drain(key, part)

    async def _attempt(self, entry: _Entry[E], work: Work) -> None:
        """Run the work; retry it with backoff; after ``attempts`` failures run the fallback until it succeeds."""
        delay = 0.5
        for attempt in itertools.count(1):
            try:
                await work()
                return
            except Exception as exc:  # logged with where it came from, never the payload
                self.failed += 1
                where = self._hooks.describe(entry.item)
                log.error("work failed on %s (attempt %d): %s: %s", where, attempt, type(exc).__name__, exc)
                if attempt >= self._attempts and self._hooks.fallback is not None:
                    work = functools.partial(self._hooks.fallback, entry.item, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_BACKOFF_MAX_S)

    async def _drain(self, key: Hashable, part: _Partition[E]) -> None:
        while part.entries and part.entries[0].done:
            entry = part.entries.popleft()
            await self._hooks.ack(entry.item)
            self.acked += 1
        while part.backlog and len(part.entries) < self._budget and not self._closed.is_set():
            item, work = part.backlog.popleft()
            await self._start(key, part, item, work)
        if part.paused and not part.backlog:
            part.paused = False
            if self._hooks.resume is not None:
                self._flow(self._hooks.resume, key)

    @staticmethod
    def _flow(hook: Callable[[Hashable], None], key: Hashable) -> None:
        """Pause or resume a key; a consumer that refuses only costs flow control, never the acks."""
        try:
            hook(key)
        except Exception:  # logged with the key: acking and draining must go on regardless
            log.exception("flow control (%s) failed for %r", getattr(hook, "__name__", "hook"), key)

    def oldest_age_s(self) -> dict[Hashable, float]:
        """Seconds since the oldest unacknowledged event of each key arrived (0 when none is pending)."""
        now = time.monotonic()
        return {key: now - p.entries[0].since if p.entries else 0.0 for key, p in self._partitions.items()}

    def oldest(self, key: Hashable) -> E | None:
        """The oldest unacknowledged item of a key, if any."""
        part = self._partitions.get(key)
        return part.entries[0].item if part is not None and part.entries else None

    def forget(self, key: Hashable) -> None:
        """Drop a revoked key's bookkeeping once it holds nothing."""
        part = self._partitions.get(key)
        if part is not None and not part.entries and not part.backlog:
            del self._partitions[key]

    def close(self) -> None:
        """Start no more work (shutdown)."""
        self._closed.set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait for in-flight work up to ``timeout_s``; cancel what is left. True only if every submitted
        item was finished and acked (parked or backlogged items count as unfinished)."""
        deadline = time.monotonic() + timeout_s
        while self._tasks and (left := deadline - time.monotonic()) > 0:  # backlog starts new tasks as it drains
            await asyncio.wait(set(self._tasks), timeout=left)
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return not any(p.entries or p.backlog for p in self._partitions.values())
