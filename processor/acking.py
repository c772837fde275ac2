"""Acknowledgement in offset order, per partition.

faust-streaming 0.15.3 can commit past a message still in flight when acks arrive
out of order (its issue #606: a gap of one offset is not held back). Here every
partition has one sequential ack stream: an event is acked only after it and every
event before it on its partition are finished, so the acked offsets the consumer
commits from never contain a gap, and a commit never passes unfinished work.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
E = TypeVar("E")


class _Entry(Generic[E]):
    __slots__ = ("done", "item")

    def __init__(self, item: E) -> None:
        self.item = item
        self.done = False


class OrderedAcker(Generic[E]):
    """Runs work for items concurrently and acks them strictly in arrival order per key."""

    def __init__(self, ack: Callable[[E], Awaitable[object]], max_in_flight: int, max_unacked: int) -> None:
        self._ack = ack
        self._running = asyncio.Semaphore(max_in_flight)
        self._unacked = asyncio.Semaphore(max_unacked)
        self._queues: dict[Hashable, deque[_Entry[E]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.acked = 0
        self.failed = 0
        self._closed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def submit(self, key: Hashable, item: E, work: Callable[[], Awaitable[object]]) -> None:
        """Wait for capacity, then start ``work`` for ``item``; it is acked once it and its elders finish.

        After ``close()`` this never returns: the item stays unacked and is replayed later.
        """
        if self._closed.is_set():
            await asyncio.Future()  # parked until the consumer task is cancelled
        await self._unacked.acquire()
        await self._running.acquire()
        entry = _Entry(item)
        self._queues.setdefault(key, deque()).append(entry)
        task = asyncio.create_task(self._run(key, entry, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Hashable, entry: _Entry[E], work: Callable[[], Awaitable[object]]) -> None:
        try:
            await work()
        except asyncio.CancelledError:
            return  # shutdown: never acked, so replayed by whoever owns the partition next
        except Exception:
            # The partition stops acking here: later offsets must not be committed past this one.
            self.failed += 1
            log.exception("work failed on %s; partition %r holds its offset until restart", entry.item, key)
            return
        finally:
            self._running.release()
        entry.done = True
        await self._drain(key)

    async def _drain(self, key: Hashable) -> None:
        queue = self._queues[key]
        while queue and queue[0].done:
            entry = queue.popleft()
            await self._ack(entry.item)
            self.acked += 1
            self._unacked.release()

    def close(self) -> None:
        """Start no more work (shutdown)."""
        self._closed.set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait for in-flight work up to ``timeout_s``; cancel what is left. True if all finished."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return not pending
