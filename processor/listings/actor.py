"""The listing actor's core, without Faust: listing ids in, states recomputed, stored and published.

``update(listing_id)`` returns once the listing's state reflects every image row committed before
the call, is stored in ``listings`` and its change was confirmed by the broker on ``listing-updates``
(key: listing_id). Concurrent updates share one recomputation per micro-batch (set-based SQL, one
transaction), and a listing named several times in a batch is recomputed once.

A listing left without images is published as a Kafka tombstone (null value: the topic is compacted),
and only when subscribers saw it with images before: a removal processed before the listing's first
result publishes nothing, rather than an empty listing a partner might show.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson

from .. import contracts
from ..batching import MicroBatcher
from ..sink import Publisher, Record, until_done
from .rules import ListingRules, ListingState
from .store import ListingStore


def listing_record(topic: str, state: ListingState, correlation_id: str | None = None) -> Record:
    """The ``listing-updates`` record of a state: the state (schemas/listing-update.schema.json), or a
    tombstone when the listing has no images left; the ``revision`` header is on both."""
    correlation = correlation_id or str(uuid.uuid5(contracts.RECORD_NAMESPACE, f"listing|{state.listing_id}"))
    headers = contracts.LISTING_UPDATE.headers(correlation, revision=str(state.revision))
    value = orjson.dumps(listing_output(state)) if state.image_count else None
    return Record(topic, state.listing_id.encode(), value, headers)


def listing_output(state: ListingState) -> dict[str, Any]:
    """The value of a listing's record: its state with the schema version."""
    return {"schema_version": contracts.LISTING_UPDATE.version, **state.to_output()}


class ListingActor:
    """Owns the listing store and the batcher; ``start`` once the Postgres pool exists."""

    def __init__(
        self,
        rules: ListingRules,
        publisher: Publisher,
        updates_topic: str,
        images_table: str,
        table: str = "listings",
        batch_size: int = 256,
        delay_s: float = 0.05,
    ) -> None:
        self.rules = rules
        self.publisher = publisher
        self.updates_topic = updates_topic
        self.images_table = images_table
        self.table = table
        self.store: ListingStore | None = None
        self._batcher: MicroBatcher[str, None] = MicroBatcher(self._flush, batch_size, delay_s, name="listings")
        self._correlation: dict[str, str] = {}  # listing -> the correlation id of the last record naming it
        self.published = 0

    async def start(self, pool: asyncpg.Pool) -> None:
        """Migrate the listings table and start batching (idempotent)."""
        if self.store is not None:
            return
        store = ListingStore(pool, self.rules, self.images_table, self.table)
        await until_done(store.migrate, "listings migrate")
        self.store = store
        self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()

    async def update(self, listing_id: str, correlation_id: str | None = None) -> None:
        """Bring one listing's stored and published state up to date; its record carries the
        correlation id of the result or removal that asked for it."""
        if correlation_id is not None:
            self._correlation[listing_id] = correlation_id
        await self._batcher.submit(listing_id)

    async def _flush(self, listing_ids: list[str]) -> list[None]:
        store = self.store
        assert store is not None, "ListingActor.start() was not called"
        states = await until_done(lambda: store.recompute(listing_ids), "listings recompute")
        if states:
            correlation = self._correlation
            records = [listing_record(self.updates_topic, s, correlation.get(s.listing_id)) for s in states]
            await until_done(lambda: self.publisher.publish(records), "listing-updates publish")
            await until_done(lambda: store.mark_published(states), "listings mark published")
            self.published += len(states)
        for listing_id in listing_ids:
            self._correlation.pop(listing_id, None)
        return [None] * len(listing_ids)
