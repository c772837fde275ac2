"""The micro-batcher and the ordered acker, without a broker."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from processor.acking import AckerHooks, OrderedAcker
from processor.batching import BatcherStopped, LatencyBudget, MicroBatcher


async def test_full_batches_under_load_and_one_result_per_item() -> None:
    calls: list[list[int]] = []

    async def double(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return [i * 2 for i in items]

    batcher = MicroBatcher(double, max_size=8, max_delay_s=0.05)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(64)))
    finally:
        await batcher.stop()
    assert results == [i * 2 for i in range(64)]
    assert max(len(c) for c in calls) == 8 and batcher.stats.closed["full"] >= 7


async def test_lone_item_waits_at_most_the_delay() -> None:
    async def echo(items: list[int]) -> list[int]:
        return items

    batcher = MicroBatcher(echo, max_size=32, max_delay_s=0.02)
    batcher.start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await batcher.submit(1) == 1
        assert loop.time() - start < 1.0
        assert batcher.stats.closed == {"timeout": 1}
    finally:
        await batcher.stop()


async def test_a_bad_item_fails_alone() -> None:
    async def picky(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky")
        return items

    batcher = MicroBatcher(picky, max_size=16, max_delay_s=0.05)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(16)), return_exceptions=True)
    finally:
        await batcher.stop()
    assert isinstance(results[13], ValueError)
    assert [r for i, r in enumerate(results) if i != 13] == [i for i in range(16) if i != 13]


async def test_wrong_result_count_is_an_error() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = MicroBatcher(short, max_size=4, max_delay_s=0.01, split_on_error=False)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="returned 3 results for 4"):
            await asyncio.gather(*(batcher.submit(i) for i in range(4)))
    finally:
        await batcher.stop()


async def test_stop_fails_the_running_batch_and_the_queue_instead_of_hanging() -> None:
    async def hang(items: list[int]) -> list[int]:
        await asyncio.Event().wait()
        return items

    batcher = MicroBatcher(hang, max_size=2, max_delay_s=0.01)
    batcher.start()
    callers = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
    await asyncio.sleep(0.05)
    await batcher.stop()
    results = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 1)
    assert all(isinstance(r, BatcherStopped) for r in results)


def budget_after(
    budget_s: float, gap_s: float, alpha_s: float, beta_s: float, arrivals: int = 64
) -> tuple[LatencyBudget, float]:
    """A policy that saw ``arrivals`` items ``gap_s`` apart and batches of 4 and 16 run in
    ``alpha_s + beta_s * n``; and the time of the last arrival (a fake clock: no sleeping)."""
    policy = LatencyBudget(budget_s)
    now = 100.0
    for _ in range(arrivals):
        now += gap_s
        policy.arrived(now)
    for size in (4, 16, 4, 16):
        policy.ran(size, alpha_s + beta_s * size)
    return policy, now


def test_a_quiet_stream_pays_no_batching_delay() -> None:
    policy, now = budget_after(0.05, gap_s=0.1, alpha_s=0.001, beta_s=0.002)  # 10 items/s, 3 ms a lone item
    assert policy.target_size(32) == 1
    assert policy.decide(1, now, now, 32, 0.02) == (0.0, "early")


def test_a_busy_stream_waits_for_the_batch_it_needs_and_no_longer() -> None:
    # 1,000 items/s, half the model's per-item capacity; 4 ms per batch: batches of 8 keep up
    policy, now = budget_after(0.2, gap_s=0.001, alpha_s=0.004, beta_s=0.0005)
    assert policy.target_size(32) == 10  # 8 with 25 % headroom
    wait_s, _ = policy.decide(3, now, now, 32, 1.0)
    assert wait_s > 0
    assert policy.decide(10, now, now + 0.007, 32, 1.0) == (0.0, "early")


def test_a_batch_that_would_not_fill_in_the_budget_closes_now() -> None:
    # 50 items/s, 40 ms per batch: three to a batch would pay, but two more take 40 ms
    policy, now = budget_after(0.05, gap_s=0.02, alpha_s=0.04, beta_s=0.001)
    assert policy.target_size(32) == 3
    assert policy.decide(1, now, now, 32, 1.0) == (0.0, "early")
    roomy, now = budget_after(0.2, gap_s=0.02, alpha_s=0.04, beta_s=0.001)  # a larger budget leaves the time
    wait_s, why = roomy.decide(1, now, now, 32, 1.0)
    assert why == "timeout" and wait_s == pytest.approx(0.2 - 0.043)
    assert roomy.decide(2, now, now + wait_s, 32, 1.0) == (0.0, "timeout")  # the budget ran out before the third


def test_overload_fills_batches_and_the_delay_still_caps_the_wait() -> None:
    policy, now = budget_after(1.0, gap_s=0.001, alpha_s=0.001, beta_s=0.002)  # twice what the model can do
    assert policy.target_size(32) == 32
    assert policy.decide(32, now, now, 32, 0.02) == (0.0, "full")
    assert policy.decide(5, now, now, 32, 0.02) == (pytest.approx(0.02), "timeout")
    assert policy.decide(5, now, now + 0.02, 32, 0.02) == (0.0, "timeout")


def test_the_service_model_tells_the_fixed_cost_from_the_per_item_cost() -> None:
    policy = LatencyBudget(0.05)
    assert policy.target_size(32) == 1  # nothing known yet: do not wait
    for size in (1, 32, 8):
        policy.ran(size, 0.003 + 0.002 * size)
    for t in (0.0, 0.004, 0.008):  # 250 items/s: load 0.5, 0.003 * 250 / 0.5 = 1.5 -> 2 with headroom
        policy.arrived(t)
    assert policy.rate_per_s == pytest.approx(250)
    assert policy.target_size(32) == 2


async def test_a_lone_item_under_a_budget_does_not_wait_for_the_delay() -> None:
    async def echo(items: list[int]) -> list[int]:
        return items

    clock = iter(range(1000))  # a fake clock: one second per reading
    batcher = MicroBatcher(
        echo, max_size=32, max_delay_s=5.0, policy=LatencyBudget(0.05), clock=lambda: float(next(clock))
    )
    batcher.start()
    try:
        assert await batcher.submit(1) == 1
    finally:
        await batcher.stop()
    assert batcher.stats.closed == {"early": 1}


async def test_a_backlog_under_a_budget_still_makes_full_batches() -> None:
    calls: list[int] = []

    async def echo(items: list[int]) -> list[int]:
        calls.append(len(items))
        await asyncio.sleep(0)
        return items

    batcher = MicroBatcher(echo, max_size=8, max_delay_s=0.05, policy=LatencyBudget(0.05))
    batcher.start()
    try:
        assert await asyncio.gather(*(batcher.submit(i) for i in range(64))) == list(range(64))
    finally:
        await batcher.stop()
    assert calls == [8] * 8 and batcher.stats.closed == {"full": 8}


async def test_low_priority_items_wait_for_every_other_item() -> None:
    calls: list[list[int]] = []
    running, release = asyncio.Event(), asyncio.Event()

    async def held(items: list[int]) -> list[int]:
        calls.append(items)
        running.set()
        await release.wait()
        return items

    batcher = MicroBatcher(held, max_size=4, max_delay_s=0.0)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(0))
        await running.wait()  # the first batch runs and holds the model
        backfill = [asyncio.create_task(batcher.submit(100 + i, low_priority=True)) for i in range(6)]
        daily = [asyncio.create_task(batcher.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        release.set()
        assert await asyncio.gather(first, *daily, *backfill) == [0, 1, 2, 3, *range(100, 106)]
    finally:
        await batcher.stop()
    assert calls == [[0], [1, 2, 3, 100], [101, 102, 103, 104], [105]]


def hooks(acked: list[tuple[int, int]], **more: Any) -> AckerHooks[tuple[int, int]]:
    async def ack(item: tuple[int, int]) -> None:
        acked.append(item)

    return AckerHooks(ack, **more)


async def test_acks_follow_offset_order_per_partition_whatever_the_finish_order() -> None:
    acked: list[tuple[int, int]] = []
    acker: OrderedAcker[tuple[int, int]] = OrderedAcker(hooks(acked), max_in_flight=50, max_unacked_per_key=30)
    rng = random.Random(3)
    for offset in range(100):
        for partition in (0, 1):
            delay = rng.uniform(0, 0.03)
            await acker.submit(partition, (partition, offset), lambda d=delay: asyncio.sleep(d))
    assert await acker.wait(10)
    for partition in (0, 1):
        assert [o for p, o in acked if p == partition] == list(range(100))


async def test_a_failing_event_holds_its_partition_until_retried_and_never_the_others() -> None:
    acked: list[tuple[int, int]] = []
    failures = {(0, 2): 2}  # fails twice, then succeeds

    async def work(item: tuple[int, int]) -> None:
        await asyncio.sleep(0.001)
        if failures.get(item, 0):
            failures[item] -= 1
            raise RuntimeError("storage gone")

    acker: OrderedAcker[tuple[int, int]] = OrderedAcker(hooks(acked), 10, 100, attempts=5)
    for offset in range(6):
        for partition in (0, 1):
            await acker.submit(partition, (partition, offset), lambda i=(partition, offset): work(i))
    await asyncio.sleep(0.2)
    assert [o for p, o in acked if p == 0] == [0, 1]  # 2 is being retried: 3, 4, 5 must wait behind it
    assert [o for p, o in acked if p == 1] == list(range(6))
    assert await acker.wait(10)
    assert [o for p, o in acked if p == 0] == list(range(6)) and acker.failed == 2


async def test_an_event_that_always_fails_ends_through_the_fallback() -> None:
    acked: list[tuple[int, int]] = []
    fallen: list[tuple[int, int]] = []

    async def fallback(item: tuple[int, int], exc: BaseException) -> None:
        fallen.append(item)

    async def work(item: tuple[int, int]) -> None:
        if item == (0, 1):
            raise ValueError("poison")

    acker = OrderedAcker(hooks(acked, fallback=fallback), 10, 100, attempts=2)
    for offset in range(3):
        await acker.submit(0, (0, offset), lambda i=(0, offset): work(i))
    assert await acker.wait(10)
    assert fallen == [(0, 1)] and acked == [(0, 0), (0, 1), (0, 2)]


async def test_a_stuck_partition_over_budget_is_paused_and_the_others_go_on() -> None:
    acked: list[tuple[int, int]] = []
    paused: list[object] = []
    resumed: list[object] = []
    release = asyncio.Event()

    async def work(item: tuple[int, int]) -> None:
        if item == (0, 0):
            await release.wait()  # the head of partition 0 hangs (a slow-drip download, say)

    acker = OrderedAcker(hooks(acked, pause=paused.append, resume=resumed.append), 8, max_unacked_per_key=4)
    for offset in range(50):
        for partition in (0, 1):
            await asyncio.wait_for(
                acker.submit(partition, (partition, offset), lambda i=(partition, offset): work(i)), 1
            )
    await asyncio.sleep(0.05)
    assert [o for p, o in acked if p == 1] == list(range(50)), "partition 1 was held up by partition 0"
    assert paused == [0] and not [o for p, o in acked if p == 0]
    assert acker.oldest_age_s()[0] > 0.04 and acker.oldest_age_s()[1] == 0.0
    release.set()
    assert await acker.wait(10)
    assert [o for p, o in acked if p == 0] == list(range(50)) and resumed == [0]


async def test_wait_reports_work_that_never_started() -> None:
    acked: list[tuple[int, int]] = []
    release = asyncio.Event()
    acker = OrderedAcker(hooks(acked), max_in_flight=1, max_unacked_per_key=10)
    await acker.submit(0, (0, 0), release.wait)
    waiting = asyncio.create_task(acker.submit(0, (0, 1), release.wait))  # waits for the only slot
    await asyncio.sleep(0.01)
    acker.close()
    assert not await acker.wait(0.1), "wait() said everything finished while an event never ran"
    waiting.cancel()
