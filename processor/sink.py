"""The sink role: buffer outcomes, flush each buffer Postgres -> topic -> cache, then report what was stored.

Writes happen in that order so that a replay never finds a cached result whose outputs were not
written, and ``submit`` returns only when the outcome's row is in Postgres and the broker confirmed
its record: the caller may acknowledge the input then. Only what the upsert applied is published,
so the last record per image on the topic agrees with Postgres.

Failures are isolated per item. An outage (database or broker down) is retried with capped backoff
until it ends or the sink stops, losing nothing. A failure that belongs to one item (``rejects_item``)
splits the flush in halves until that item is alone; after ``item_attempts`` tries it becomes a
``storage_rejected`` dead letter, and its neighbours are stored as usual.

The collaborators are Protocols; ``processor.dev.memory`` has an in-memory twin of each, so the
pipeline core runs in tests without any server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

import orjson

from . import contracts, metrics
from .batching import MicroBatcher
from .cache import CachedResult
from .errors import rejects_item
from .events import Classification, DeadLetter, Deletion, Outcome
from .store import latest_per_image

log = logging.getLogger(__name__)
STORE_BACKOFF_MAX_S = 10.0
T = TypeVar("T")


class Record(NamedTuple):
    """One record to publish; a ``None`` value is a tombstone (compacted topics)."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: contracts.Headers = ()


class Publisher(Protocol):
    """Sends records and returns once the broker has confirmed every one of them."""

    async def publish(self, records: Sequence[Record]) -> None: ...


class ResultStore(Protocol):
    """The table of results, deletions and dead letters (Postgres in production)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> int: ...
    async def ping(self) -> bool: ...
    async def write(self, outcomes: Sequence[Outcome]) -> set[str]:
        """Store the outcomes in one transaction; return the image ids whose row they now are."""
        ...


class Cache(Protocol):
    """Results by URL and by content hash; failures are the cache's own business (it never raises)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def get_url(self, url: str, model: str) -> CachedResult | None: ...
    async def get_hash(self, content_hash: str, model: str) -> CachedResult | None: ...
    async def put_many(self, entries: list[tuple[str, str, CachedResult]]) -> None:
        """Store (url, model "name:version", result) entries."""
        ...


@dataclass(frozen=True, slots=True)
class SinkTopics:
    """Where each kind of outcome is published."""

    output: str
    dlq: str
    removals: str


class Sink:
    """Buffers outcomes and flushes them in batches of up to ``batch_size`` or after ``delay_s``."""

    def __init__(
        self,
        store: ResultStore,
        publisher: Publisher,
        cache: Cache,
        topics: SinkTopics,
        batch_size: int,
        delay_s: float,
        item_attempts: int = 3,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.cache = cache
        self.topics = topics
        self.item_attempts = item_attempts
        self._buffer: MicroBatcher[Outcome, Outcome] = MicroBatcher(
            self._flush, batch_size, delay_s, split_on_error=False, name="store"
        )

    def start(self) -> None:
        self._buffer.start()

    async def stop(self) -> None:
        await self._buffer.stop()

    async def submit(self, outcome: Outcome) -> Outcome:
        """Return once the outcome is stored and published: itself, or the dead letter it became."""
        return await self._buffer.submit(outcome)

    async def _flush(self, outcomes: list[Outcome]) -> list[Outcome]:
        stored, applied = await self._write(outcomes)
        winners = {id(o) for o in latest_per_image(o for o in stored if not isinstance(o, DeadLetter))}
        published = await self._publish_many(stored, winners, applied)
        await self.cache.put_many(
            [
                (o.event.url, o.model_key, cached(o))
                for o in published
                if isinstance(o, Classification) and o.cache != "url"
            ]
        )
        return published

    async def _publish_many(self, stored: list[Outcome], winners: set[int], applied: set[str]) -> list[Outcome]:
        """Publish the batch's records at once; when the broker rejects one, publish them one by one."""
        due = [o for o in stored if isinstance(o, DeadLetter) or (id(o) in winners and o.event.image_id in applied)]
        _count_unpublished(stored, winners, applied)
        try:
            await self._until_stored(lambda: self.publisher.publish([self.record(o) for o in due]), "broker publish")
            return stored
        except ItemRejected:
            final = {id(o): await self._publish(o) for o in due}
            return [final.get(id(o), o) for o in stored]

    async def _publish(self, outcome: Outcome) -> Outcome:
        """Publish one outcome's record; a record the broker refuses for good turns into a dead letter."""
        for attempt in range(1, self.item_attempts + 1):
            try:
                await self._until_stored(lambda: self.publisher.publish([self.record(outcome)]), "broker publish")
                return outcome
            except ItemRejected as exc:
                if attempt == self.item_attempts:
                    return await self._rejected(outcome, exc.cause, "broker")
        raise AssertionError("unreachable")

    async def _write(self, outcomes: list[Outcome]) -> tuple[list[Outcome], set[str]]:
        """Write to Postgres; split on an item's own failure until it is alone, then dead-letter it."""
        try:
            return outcomes, await self._until_stored(lambda: self.store.write(outcomes), "postgres write")
        except ItemRejected as exc:
            if len(outcomes) > 1:
                half = len(outcomes) // 2
                first, first_applied = await self._write(outcomes[:half])
                second, second_applied = await self._write(outcomes[half:])
                return first + second, first_applied | second_applied
            # published with the rest of the flush (publishing it here too would publish it twice)
            return [await self._rejected(outcomes[0], exc.cause, "postgres", publish=False)], set()

    async def _rejected(self, outcome: Outcome, cause: BaseException, where: str, publish: bool = True) -> Outcome:
        """The dead letter of an item storage refused; stored, and published unless the caller will."""
        metrics.STORAGE_REJECTED.labels(where=where).inc()
        if isinstance(outcome, DeadLetter) and outcome.kind == "storage_rejected":
            log.error(
                "%s refused the dead letter of %s as well; it is in the log only", where, outcome.envelope.describe()
            )
            return outcome
        log.warning("%s refused %s for good: %s", where, outcome.envelope.describe(), type(cause).__name__)
        dead = DeadLetter(
            outcome.envelope,
            "storage_rejected",
            f"{where} refused it: {type(cause).__name__}: {cause}",
            self.item_attempts,
            *_ids(outcome),
        )
        stored, _ = await self._write([dead])
        return await self._publish(stored[0]) if publish else stored[0]

    async def _until_stored(self, step: Callable[[], Awaitable[T]], what: str) -> T:
        """Retry an outage until it ends; raise ItemRejected for an item's own failure (after a few tries)."""
        for attempt in range(1, self.item_attempts + 1):
            try:
                return await until_done(step, what)
            except ItemRejected:
                if attempt == self.item_attempts:
                    raise
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def record(self, outcome: Outcome) -> Record:
        """The output record of a classification, the removal record of a deletion, or a DLQ record
        (key: the listing id, none for a dead letter without one), with the contract's headers."""
        correlation = outcome.envelope.correlation_id()
        if isinstance(outcome, DeadLetter):
            key = outcome.listing_id.encode() if outcome.listing_id else None
            value = orjson.dumps(outcome.to_output())
            return Record(self.topics.dlq, key, value, contracts.DEAD_LETTER.headers(correlation))
        if isinstance(outcome, Classification):
            topic, schema = self.topics.output, contracts.IMAGE_CLASSIFICATION
        else:
            topic, schema = self.topics.removals, contracts.IMAGE_REMOVAL
        key = outcome.event.listing_id.encode()
        return Record(topic, key, orjson.dumps(outcome.to_output()), schema.headers(correlation))


class ItemRejected(Exception):
    """Storage refused the items of a step for a reason of their own (``errors.rejects_item``)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def until_done(step: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a storage step until it succeeds; cancellation (shutdown) is the only way out, and an
    item's own failure is raised as ItemRejected at once. An outage is logged when it starts and
    when it ends (every retry is counted in processor_store_retries_total, not logged)."""
    delay = 0.1
    started = 0.0
    retries = 0
    while True:
        try:
            result = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an outage unless it is the item's own fault
            if rejects_item(exc):
                raise ItemRejected(exc) from exc
            metrics.STORE_RETRIES.inc()
            if not retries:
                started = time.monotonic()
                log.warning("%s failed, retrying until it succeeds: %s: %s", what, type(exc).__name__, exc)
            retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, STORE_BACKOFF_MAX_S)
            continue
        if retries:
            log.info("%s succeeded after %d retries over %.1f s", what, retries, time.monotonic() - started)
        return result


def cached(r: Classification) -> CachedResult:
    """What the cache keeps of a classification: the result, and when and as what its URL was last seen."""
    return CachedResult(
        r.content_hash, r.banner_score, r.position_scores, r.width, r.height, r.etag, r.last_modified, time.time()
    )


def _count_unpublished(stored: list[Outcome], winners: set[int], applied: set[str]) -> None:
    """Count the results and removals that end on no topic: overtaken in this flush by a newer outcome
    of the same image (superseded), or older than the row Postgres already held (stale)."""
    for o in stored:
        if isinstance(o, DeadLetter):
            continue
        kind = "removal" if isinstance(o, Deletion) else "classification"
        if id(o) not in winners:
            metrics.UNPUBLISHED.labels(kind=kind, reason="superseded").inc()
        elif o.event.image_id not in applied:
            metrics.UNPUBLISHED.labels(kind=kind, reason="stale").inc()
            log.debug("%s of %s is older than the stored row: not published", kind, o.envelope.describe())


def _ids(outcome: Outcome) -> tuple[str | None, str | None]:
    if isinstance(outcome, DeadLetter):
        return outcome.image_id, outcome.listing_id
    return outcome.event.image_id, outcome.event.listing_id


__all__ = ["Cache", "Publisher", "Record", "ResultStore", "Sink", "SinkTopics", "cached", "until_done"]
