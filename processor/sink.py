"""The sink role: buffer outcomes, flush each buffer Postgres -> topic -> cache, then report it stored.

Writes happen in that order so that a replay never finds a cached result whose outputs were not
written, and ``submit`` returns only when the outcome's row is in Postgres and the broker confirmed
its record: the caller may acknowledge the input then. Storage outages are retried with capped
backoff until they succeed or the sink stops (then ``submit`` raises and nothing is acked).

The collaborators are Protocols; ``processor.dev.memory`` has an in-memory twin of each, so the
pipeline core runs in tests without any server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import orjson

from . import metrics
from .batching import MicroBatcher
from .cache import CachedResult
from .events import Classification, DeadLetter, Outcome

log = logging.getLogger(__name__)
STORE_BACKOFF_MAX_S = 10.0

Record = tuple[str, bytes | None, bytes]  # topic, key, value


class Publisher(Protocol):
    """Sends records and returns once the broker has confirmed every one of them."""

    async def publish(self, records: Sequence[Record]) -> None: ...


class ResultStore(Protocol):
    """The table of results and dead letters (Postgres in production)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> int: ...
    async def write(self, results: Sequence[Classification], dead: Sequence[DeadLetter]) -> None: ...


class Cache(Protocol):
    """Results by URL and by content hash; failures are the cache's own business (it never raises)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def get_url(self, url: str) -> CachedResult | None: ...
    async def get_hash(self, content_hash: str) -> CachedResult | None: ...
    async def put_many(self, entries: list[tuple[str, CachedResult]]) -> None: ...


class Sink:
    """Buffers outcomes and flushes them in batches of up to ``batch_size`` or after ``delay_s``."""

    def __init__(
        self,
        store: ResultStore,
        publisher: Publisher,
        cache: Cache,
        topics: tuple[str, str],
        batch_size: int,
        delay_s: float,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.cache = cache
        self.output_topic, self.dlq_topic = topics
        self._buffer: MicroBatcher[Outcome, None] = MicroBatcher(
            self._flush, batch_size, delay_s, split_on_error=False, name="store"
        )

    def start(self) -> None:
        self._buffer.start()

    async def stop(self) -> None:
        await self._buffer.stop()

    async def submit(self, outcome: Outcome) -> None:
        """Return once the outcome is stored and published."""
        await self._buffer.submit(outcome)

    async def _flush(self, outcomes: list[Outcome]) -> list[None]:
        results = [o for o in outcomes if isinstance(o, Classification)]
        dead = [o for o in outcomes if isinstance(o, DeadLetter)]
        records = [self.record(o) for o in outcomes]
        await until_done(lambda: self.store.write(results, dead), "postgres write")
        await until_done(lambda: self.publisher.publish(records), "broker publish")
        await self.cache.put_many([(r.event.url, cached(r)) for r in results if r.cache != "url"])
        return [None] * len(outcomes)

    def record(self, outcome: Outcome) -> Record:
        """The output-topic record of a classification, or the DLQ record of a dead letter."""
        if isinstance(outcome, Classification):
            return (self.output_topic, outcome.event.listing_id.encode(), orjson.dumps(outcome.to_output()))
        key = outcome.listing_id.encode() if outcome.listing_id else None
        return (self.dlq_topic, key, orjson.dumps(outcome.to_output()))


async def until_done(step: Callable[[], Awaitable[object]], what: str) -> None:
    """Run a storage step until it succeeds; cancellation (shutdown) is the only way out."""
    delay = 0.1
    while True:
        try:
            await step()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # storage outage: keep the events, wait, try again
            metrics.STORE_RETRIES.inc()
            log.warning("%s failed, retrying in %.1f s: %s: %s", what, delay, type(exc).__name__, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, STORE_BACKOFF_MAX_S)


def cached(r: Classification) -> CachedResult:
    """What the cache keeps of a classification."""
    return CachedResult(r.content_hash, r.banner_score, r.position_scores, r.width, r.height)
