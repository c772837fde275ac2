"""Async micro-batching: one future per item, one batch call per group of items.

A batch closes when it holds ``max_size`` items or ``max_delay_s`` after its first
item arrived, whichever comes first. Only one batch runs at a time, so under load the
next batch fills while the current one runs (full batches), and when idle a lone item
waits at most ``max_delay_s``. With ``max_concurrent`` > 1 (a remote model server, whose own
batcher merges them), that many batches run at once. The batch function must return one result per item, in
order; when it raises, the batch is split in halves and retried so that one bad item
fails alone (``split_on_error``). Cancelled callers are dropped before the call.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class BatchStats:
    """Counts for benchmarks and the demo summary."""

    batches: int = 0
    items: int = 0
    sizes: Counter[int] = field(default_factory=Counter)
    closed: Counter[str] = field(default_factory=Counter)  # full | timeout
    splits: int = 0  # batches split in halves after the batch function raised


class BatcherStopped(RuntimeError):
    """The batcher stopped before this item's batch ran to the end."""


class MicroBatcher(Generic[T, R]):
    """Groups concurrent ``submit()`` calls into calls of ``fn(list) -> list``."""

    def __init__(
        self,
        fn: Callable[[list[T]], Awaitable[list[R]]],
        max_size: int,
        max_delay_s: float,
        *,
        split_on_error: bool = True,
        name: str = "batch",
        on_batch: Callable[[int, str], None] | None = None,
        max_concurrent: int = 1,
    ) -> None:
        self._fn = fn
        self.max_size = max_size
        self.max_delay_s = max_delay_s
        self._split = split_on_error
        self._name = name
        self._on_batch = on_batch  # called with (size, why it closed) before each batch runs
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._running: dict[asyncio.Task[None], list[tuple[T, asyncio.Future[R]]]] = {}  # batches being run
        self.max_concurrent = max_concurrent
        self._slots = asyncio.Semaphore(max_concurrent)
        self._task: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self._name}-batcher")

    async def stop(self) -> None:
        """Stop batching; every caller still waiting (in the running batch or queued) gets BatcherStopped."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        waiting = [item for batch in self._running.values() for item in batch]
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()
        self._slots = asyncio.Semaphore(self.max_concurrent)
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for _, fut in waiting:
            if not fut.done():
                fut.set_exception(BatcherStopped(f"{self._name} batcher stopped"))

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result (or its exception)."""
        if self._task is None or self._task.done():
            raise RuntimeError(f"{self._name} batcher is not running")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()  # a free slot first: meanwhile the next batch fills
            batch, reason = await self._collect()
            self.stats.batches += 1
            self.stats.items += len(batch)
            self.stats.sizes[len(batch)] += 1
            self.stats.closed[reason] += 1
            if self._on_batch is not None:
                self._on_batch(len(batch), reason)
            task = asyncio.create_task(self._call(batch), name=f"{self._name}-batch")
            self._running[task] = batch
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if self._running.pop(task, None) is not None:  # not after stop(), which made a new semaphore
            self._slots.release()

    async def _collect(self) -> tuple[list[tuple[T, asyncio.Future[R]]], str]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_delay_s
        while len(batch) < self.max_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return batch, "timeout"
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                return batch, "timeout"
        return batch, "full"

    async def _call(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        live = [(item, fut) for item, fut in batch if not fut.done()]
        if not live:
            return
        try:
            results = await self._fn([item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError(
                    f"{self._name}: batch function returned {len(results)} results for {len(live)} items"
                )
        except Exception as exc:  # routed to the callers: split, or fail the lone item
            if self._split and len(live) > 1:
                self.stats.splits += 1
                half = len(live) // 2
                await self._call(live[:half])
                await self._call(live[half:])
                return
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(live, results, strict=True):
            if not fut.done():
                fut.set_result(result)
