"""The listing actor's core, without Faust: listing ids in, states recomputed, stored and published.

``update(listing_id)`` returns once the listing's state reflects every image row committed before
the call, is stored in ``listings`` and its change was confirmed by the broker on ``listing-updates``
(key: listing_id). Concurrent updates share one recomputation per micro-batch (set-based SQL, one
transaction), and a listing named several times in a batch is recomputed once.
"""

from __future__ import annotations

import asyncpg
import orjson

from ..batching import MicroBatcher
from ..sink import Publisher, until_done
from .rules import ListingRules
from .store import ListingStore


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

    async def update(self, listing_id: str) -> None:
        """Bring one listing's stored and published state up to date."""
        await self._batcher.submit(listing_id)

    async def _flush(self, listing_ids: list[str]) -> list[None]:
        store = self.store
        assert store is not None, "ListingActor.start() was not called"
        states = await until_done(lambda: store.recompute(listing_ids), "listings recompute")
        if states:
            records = [(self.updates_topic, s.listing_id.encode(), orjson.dumps(s.to_output())) for s in states]
            await until_done(lambda: self.publisher.publish(records), "listing-updates publish")
            await until_done(lambda: store.mark_published(states), "listings mark published")
            self.published += len(states)
        return [None] * len(listing_ids)
