"""Feeding events onto a topic at a bounded rate, with progress: what backfill, reclassify and
DLQ redrive share. Each event is keyed by its listing id; at most ``window`` events await the broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable

from aiokafka import AIOKafkaProducer
from aiolimiter import AsyncLimiter

from .topics import bootstrap

Progress = Callable[[int], None]  # called with the number of events sent so far


async def feed(
    broker_url: str,
    topic: str,
    events: AsyncIterable[tuple[bytes | None, bytes]],
    rate_per_s: float,
    progress: Progress | None = None,
    window: int = 1000,
) -> int:
    """Send (key, value) events at most ``rate_per_s`` per second; return how many the broker confirmed."""
    limiter = AsyncLimiter(1, 1 / rate_per_s) if rate_per_s < 1 else AsyncLimiter(rate_per_s, 1.0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(broker_url), acks="all", linger_ms=5)
    await producer.start()
    pending: list[asyncio.Future[object]] = []
    sent = 0
    try:
        async for key, value in events:
            async with limiter:
                pending.append(await producer.send(topic, value, key=key))
            sent += 1
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending.clear()
            if progress is not None:
                progress(sent)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent
