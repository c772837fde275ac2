"""The micro-batcher and the ordered acker, without a broker."""

from __future__ import annotations

import asyncio
import random

import pytest

from processor.acking import OrderedAcker
from processor.batching import MicroBatcher


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


async def test_acks_follow_offset_order_per_partition_whatever_the_finish_order() -> None:
    acked: list[tuple[int, int]] = []

    async def ack(item: tuple[int, int]) -> None:
        acked.append(item)

    acker: OrderedAcker[tuple[int, int]] = OrderedAcker(ack, max_in_flight=50, max_unacked=400)
    rng = random.Random(3)
    for offset in range(100):
        for partition in (0, 1):
            delay = rng.uniform(0, 0.03)
            await acker.submit(partition, (partition, offset), lambda d=delay: asyncio.sleep(d))
    assert await acker.wait(10)
    for partition in (0, 1):
        assert [o for p, o in acked if p == partition] == list(range(100))


async def test_a_failed_event_holds_back_every_later_ack_on_its_partition() -> None:
    acked: list[tuple[int, int]] = []

    async def ack(item: tuple[int, int]) -> None:
        acked.append(item)

    async def work(fail: bool) -> None:
        await asyncio.sleep(0.001)
        if fail:
            raise RuntimeError("storage gone")

    acker: OrderedAcker[tuple[int, int]] = OrderedAcker(ack, 10, 100)
    for offset in range(6):
        for partition in (0, 1):
            await acker.submit(partition, (partition, offset), lambda f=(partition, offset) == (0, 2): work(f))
    await acker.wait(5)
    assert [o for p, o in acked if p == 0] == [0, 1]  # 2 failed: 3, 4, 5 finished but must not be acked
    assert [o for p, o in acked if p == 1] == list(range(6))
