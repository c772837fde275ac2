"""Async micro-batching: one future per item, one batch call per group of items.

A batch closes when it holds ``max_size`` items or ``max_delay_s`` after its first
item arrived, whichever comes first. Only one batch runs at a time, so under load the
next batch fills while the current one runs (full batches), and when idle a lone item
waits at most ``max_delay_s``. With a ``LatencyBudget`` policy it may close sooner:
when the batch already holds as many items as the arrival rate needs per batch to keep
up, or when the items it waits for would not come within the budget (see the class).
With ``max_concurrent`` > 1 (a remote model server, whose own batcher merges them), that
many batches run at once. The batch function must return one result per item, in order;
when it raises, the batch is split in halves and retried so that one bad item fails alone
(``split_on_error``). Cancelled callers are dropped before the call.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
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
    closed: Counter[str] = field(default_factory=Counter)  # full | timeout | early
    splits: int = 0  # batches split in halves after the batch function raised


class _ServiceModel:
    """Run time of a batch of n items, ``alpha + beta * n``, fitted by exponentially weighted least squares."""

    def __init__(self, decay: float) -> None:
        self._decay = decay
        self._w = self._n = self._t = self._nn = self._nt = 0.0

    def add(self, size: int, seconds: float) -> None:
        d = self._decay
        self._w = self._w * d + 1
        self._n = self._n * d + size
        self._t = self._t * d + seconds
        self._nn = self._nn * d + size * size
        self._nt = self._nt * d + size * seconds

    def fit(self) -> tuple[float, float]:
        """``(alpha, beta)``: seconds per batch and per item; (0, 0) before the first batch."""
        if self._w == 0:
            return 0.0, 0.0
        mean_n, mean_t = self._n / self._w, self._t / self._w
        var_n = self._nn / self._w - mean_n * mean_n
        if var_n > 0.25:  # sizes differ enough to tell the fixed cost from the per-item cost
            beta = (self._nt / self._w - mean_n * mean_t) / var_n
            alpha = mean_t - beta * mean_n
            if beta > 0 and alpha >= 0:
                return alpha, beta
        return 0.0, mean_t / mean_n  # one size only (or noise): charge it all per item


class LatencyBudget:
    """When to close a batch: as soon as waiting longer cannot pay, within a latency budget.

    Batching pays only when the model cannot keep up with single items: a batch of n runs in
    ``alpha + beta * n`` seconds (fitted from the batches run), so at ``rate`` items/s the model keeps
    up with batches of ``n* = rate * alpha / (1 - rate * beta)`` items (all of them when
    ``rate * beta >= 1``). A batch closes when it holds ``headroom * n*`` items (``early``), when the
    missing items would not arrive before its first item's budget runs out (``early``: it will not
    fill; under overload it waits for every item it can get instead), or when waiting more would
    break the budget or ``max_delay_s`` (``timeout``). The budget
    covers the wait and the batch's own run. So a quiet stream pays no batching delay, a busy one
    gets the batches it needs, and under overload batches fill while the previous one runs.
    Times are passed in (``now``), so the policy runs on any clock.
    """

    def __init__(
        self,
        budget_s: float,
        *,
        headroom: float = 1.25,
        rate_weight: float = 1 / 16,
        service_decay: float = 0.9,
        max_gap_s: float = 1.0,
    ) -> None:
        self.budget_s = budget_s
        self.headroom = headroom  # bigger batches than the bare minimum absorb bursts and noise
        self._rate_weight = rate_weight
        self._max_gap_s = max_gap_s  # an idle spell counts as this long a gap, so the rate recovers quickly
        self._service = _ServiceModel(service_decay)
        self._last_arrival: float | None = None
        self._gap_s: float | None = None  # smoothed time between arrivals

    def arrived(self, now: float) -> None:
        """One item arrived at ``now``."""
        if self._last_arrival is not None:
            gap = min(max(0.0, now - self._last_arrival), self._max_gap_s)
            self._gap_s = gap if self._gap_s is None else self._gap_s + self._rate_weight * (gap - self._gap_s)
        self._last_arrival = now

    def ran(self, size: int, seconds: float) -> None:
        """A batch of ``size`` items took ``seconds`` to run."""
        if size > 0:
            self._service.add(size, max(0.0, seconds))

    @property
    def rate_per_s(self) -> float:
        """Smoothed arrival rate; 0 until two items arrived."""
        if self._gap_s is None:
            return 0.0
        return float("inf") if self._gap_s <= 0 else 1 / self._gap_s

    def target_size(self, max_size: int) -> int:
        """The batch size worth waiting for at the current arrival rate."""
        alpha, beta = self._service.fit()
        load = self.rate_per_s * beta
        if load >= 1:
            return max_size
        needed = self.rate_per_s * alpha / (1 - load)
        return max(1, min(max_size, math.ceil(self.headroom * needed)))

    def decide(self, size: int, first_at: float, now: float, max_size: int, max_delay_s: float) -> tuple[float, str]:
        """``(seconds to keep waiting, why it would close)``; 0 seconds: close now."""
        if size >= max_size:
            return 0.0, "full"
        target = self.target_size(max_size)
        if size >= target:
            return 0.0, "early"
        alpha, beta = self._service.fit()
        left = first_at + min(self.budget_s - (alpha + beta * target), max_delay_s) - now
        if left <= 0:
            return 0.0, "timeout"
        if target < max_size:  # not overloaded: a batch that will not reach its target in time goes now
            gap = self._gap_s if self._gap_s is not None else self._max_gap_s
            if (target - size) * gap > left:
                return 0.0, "early"
        return left, "timeout"  # overloaded: every item more is worth its wait, up to the budget


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
        policy: LatencyBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fn = fn
        self.max_size = max_size
        self.max_delay_s = max_delay_s
        self._split = split_on_error
        self._name = name
        self._on_batch = on_batch  # called with (size, why it closed) before each batch runs
        self.policy = policy  # None: close on max_size and max_delay_s only
        self._clock = clock
        # two queues: items submitted with ``low_priority`` (backfill) go into a batch only after every
        # waiting item of the other queue, so a backlog of them never delays the daily items
        self._queues: tuple[deque[tuple[T, asyncio.Future[R]]], ...] = (deque(), deque())
        self._arrived = asyncio.Event()
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
        for queue in self._queues:
            waiting.extend(queue)
            queue.clear()
        for _, fut in waiting:
            if not fut.done():
                fut.set_exception(BatcherStopped(f"{self._name} batcher stopped"))

    async def submit(self, item: T, *, low_priority: bool = False) -> R:
        """Queue one item and wait for its result (or its exception); a ``low_priority`` item joins a
        batch only when no other item waits."""
        if self._task is None or self._task.done():
            raise RuntimeError(f"{self._name} batcher is not running")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        if self.policy is not None:
            self.policy.arrived(self._clock())
        self._queues[low_priority].append((item, fut))  # unbounded: no await, no event-loop hop per item
        self._arrived.set()
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
        batch: list[tuple[T, asyncio.Future[R]]] = []
        await self._take(batch, None)
        first_at = self._clock()
        while True:
            wait_s, reason = self._wait_s(len(batch), first_at)
            if wait_s <= 0:
                return batch, reason
            if not await self._take(batch, wait_s):
                return batch, "timeout"

    async def _take(self, batch: list[tuple[T, asyncio.Future[R]]], timeout_s: float | None) -> bool:
        """Move waiting items into ``batch`` (up to ``max_size``, high priority first), after waiting up
        to ``timeout_s`` (None: for ever) for one to arrive; False if none came."""
        high, low = self._queues
        if not high and not low:
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._arrived.wait()
            except TimeoutError:
                return False
        for queue in (high, low):
            while queue and len(batch) < self.max_size:
                batch.append(queue.popleft())
        return True

    def _wait_s(self, size: int, first_at: float) -> tuple[float, str]:
        """How much longer this batch may wait for items, and why it closes if not at all."""
        if self.policy is not None:
            return self.policy.decide(size, first_at, self._clock(), self.max_size, self.max_delay_s)
        if size >= self.max_size:
            return 0.0, "full"
        return first_at + self.max_delay_s - self._clock(), "timeout"

    async def _call(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        live = [(item, fut) for item, fut in batch if not fut.done()]
        if not live:
            return
        try:
            started = self._clock()
            results = await self._fn([item for item, _ in live])
            if self.policy is not None:
                self.policy.ran(len(live), self._clock() - started)
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
