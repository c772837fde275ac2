"""ListingStore against real Postgres: states follow the surviving image rows whatever the
order of writes and recomputations, unchanged states are not rewritten, and concurrent
recomputations serialise."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from processor.dev.stack import StackUrls
from processor.events import version_key
from processor.listings import ImageResult, ListingRules, ListingState, ListingStore, compute_state
from processor.listings.store import LISTING_LOCK_SPACE
from processor.store import NOT_OLDER, PostgresStore

T0 = datetime(2026, 12, 1, tzinfo=UTC)
VERSIONS = ("2026.11.30.9", "2026.11.30.10")  # in this order as numbers, the other way round as text
POSITIONS = ("front", "front_three_quarter", "side", "rear", "interior", "dashboard", "engine", "unsure")


@dataclass
class Db:
    pool: asyncpg.Pool
    images: str
    store: ListingStore


@pytest.fixture(scope="module")
async def db(stack_urls: StackUrls) -> AsyncIterator[Db]:
    """The image store's table, as its migrations make it, and the listings table."""
    tag = uuid.uuid4().hex[:10]
    images, listings = f"images_{tag}", f"listings_{tag}"
    image_store = PostgresStore(stack_urls.postgres_dsn, table=images)
    await image_store.start()
    try:
        await image_store.migrate()
    finally:
        await image_store.close()
    pool = await asyncpg.create_pool(stack_urls.postgres_dsn, min_size=1, max_size=4)
    try:
        store = ListingStore(pool, ListingRules(), images_table=images, table=listings)
        assert await store.migrate() == 1
        assert await store.migrate() == 1
        yield Db(pool, images, store)
        await pool.execute(f'DROP TABLE "{images}", "{listings}"')
    finally:
        await pool.close()


@dataclass(frozen=True)
class Event:
    """An image result (version set) or a deletion (version None) of one image at one time."""

    listing_id: str
    image_id: str
    t: int
    version: str | None
    position_index: int | None = None
    has_banner: bool = False
    position: str = "front"

    def order_key(self) -> tuple[int, bool, tuple[int, ...]]:
        """The image store's order: event time, then a deletion over a result, then model version."""
        return self.t, self.version is None, version_key(self.version) if self.version else ()


async def write(pool: asyncpg.Pool | asyncpg.Connection, table: str, e: Event) -> None:
    """Upsert one image row or tombstone with the image store's guard (a row is replaced by an outcome not older)."""
    deleted = e.version is None
    await pool.execute(
        f"""INSERT INTO "{table}" AS t (image_id, listing_id, position_index, has_banner, position,
                model_version, event_time, deleted, classified_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
            ON CONFLICT (image_id) DO UPDATE SET listing_id = excluded.listing_id,
                position_index = excluded.position_index, has_banner = excluded.has_banner,
                position = excluded.position, model_version = excluded.model_version,
                event_time = excluded.event_time, deleted = excluded.deleted
            WHERE {NOT_OLDER}""",
        e.image_id,
        e.listing_id,
        None if deleted else e.position_index,
        None if deleted else e.has_banner,
        None if deleted else e.position,
        e.version,
        T0 + timedelta(seconds=e.t),
        deleted,
    )


def survivors(events: list[Event], listing_id: str) -> list[ImageResult]:
    latest: dict[str, Event] = {}
    for e in events:
        if e.listing_id == listing_id and (e.image_id not in latest or e.order_key() >= latest[e.image_id].order_key()):
            latest[e.image_id] = e
    return [
        ImageResult(e.image_id, e.position_index, e.has_banner, e.position, e.version)
        for e in latest.values()
        if e.version is not None
    ]


def result(listing: str, image: str, index: int | None, position: str = "front", banner: bool = False) -> Event:
    return Event(listing, f"{listing}/{image}", 0, VERSIONS[0], index, banner, position)


def new_listing() -> str:
    return f"L-{uuid.uuid4().hex[:12]}"


# Two listings' histories: one content per (image, time, version or deletion), so that the surviving
# row never depends on arrival order (true duplicates are added later).
raw_events = st.lists(
    st.tuples(
        st.integers(0, 1),  # listing
        st.integers(0, 4),  # image
        st.integers(0, 3),  # event time
        st.sampled_from((*VERSIONS, None)),
        st.none() | st.integers(0, 3),
        st.booleans(),
        st.sampled_from(POSITIONS),
    ),
    max_size=24,
)


def history(raw: list[tuple[int, int, int, str | None, int | None, bool, str]], listings: list[str]) -> list[Event]:
    by_key: dict[tuple[int, int, int, str | None], Event] = {}
    for listing, image, t, version, index, banner, position in raw:
        key = (listing, image, t, version)
        by_key.setdefault(
            key, Event(listings[listing], f"{listings[listing]}/{image}", t, version, index, banner, position)
        )
    deleted_at = {k[:3] for k in by_key if k[3] is None}
    return [e for k, e in by_key.items() if k[3] is None or k[:3] not in deleted_at]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=raw_events, data=st.data())
async def test_last_published_state_is_that_of_the_surviving_rows(
    db: Db, raw: list[tuple[int, int, int, str | None, int | None, bool, str]], data: st.DataObject
) -> None:
    """Writes in any order, with duplicates; recomputations after any of them; publishes
    that crash before the broker's ack: the last record per listing is still right."""
    listings = [new_listing(), new_listing()]
    events = history(raw, listings)
    replayed = events + data.draw(st.lists(st.sampled_from(events), max_size=8) if events else st.just([]))
    order = data.draw(st.permutations(replayed))
    steps = data.draw(
        st.lists(st.sampled_from(["write", "recompute", "crash"]), min_size=len(order), max_size=len(order))
    )
    topic: dict[str, ListingState] = {}

    async def recompute_and_publish(ids: list[str], crash: bool = False) -> None:
        pending = await db.store.recompute(ids)
        if not crash:
            for state in pending:
                assert state.listing_id not in topic or state.revision >= topic[state.listing_id].revision
                topic[state.listing_id] = state
            await db.store.mark_published(pending)

    for e, step in zip(order, steps, strict=True):
        await write(db.pool, db.images, e)
        if step != "write":
            await recompute_and_publish([e.listing_id], crash=step == "crash")
    await recompute_and_publish(listings)
    event(f"surviving images: {sum(len(survivors(events, listing)) for listing in listings)}")
    for listing in listings:
        expected = compute_state(listing, survivors(events, listing), db.store.rules)
        if expected.image_count:
            assert topic[listing] == expected
        else:  # a tombstone, or nothing when subscribers never saw the listing with images
            assert listing not in topic or topic[listing] == expected
        assert await db.store.get(listing) == expected
    assert await db.store.recompute(listings) == []


async def test_recompute_returns_changed_or_unpublished_states_and_fills_the_columns(db: Db) -> None:
    a, b = new_listing(), new_listing()
    for e in (result(a, "1", 1, "rear"), result(a, "2", 0, "front", banner=True), result(b, "1", None, "side")):
        await write(db.pool, db.images, e)
    changed = await db.store.recompute([b, a, a])
    assert [s.listing_id for s in changed] == sorted([a, b])
    assert [s.revision for s in changed] == [1, 1]
    again = await db.store.recompute([a, b])  # stored but not published: returned as stored
    assert [(s, s.revision, s.updated_at) for s in again] == [(s, s.revision, s.updated_at) for s in changed]
    await db.store.mark_published(changed)
    assert await db.store.recompute([a, b]) == []
    row = await db.pool.fetchrow(f'SELECT * FROM "{db.store.table}" WHERE listing_id = $1', a)
    assert row is not None
    state_a = next(s for s in changed if s.listing_id == a)
    assert (row["hero_image_id"], row["hero_reason"], row["image_count"], row["banner_free_count"]) == (
        f"{a}/1",
        "first_banner_free",
        2,
        1,
    )
    assert (row["banner_share"], row["model_versions"], row["state_hash"], row["revision"]) == (
        0.5,
        [VERSIONS[0]],
        state_a.state_hash,
        1,
    )
    await write(db.pool, db.images, Event(a, f"{a}/1", 1, None))  # tombstone of the hero
    [after] = await db.store.recompute([a, b])
    assert (after.listing_id, after.hero_image_id, after.hero_reason, after.feed) == (
        a,
        None,
        "no_banner_free_image",
        (),
    )
    assert after.revision == 2
    stored = await db.store.get(a)
    assert stored == after and (stored.revision, stored.updated_at) == (2, after.updated_at)
    await db.store.mark_published([after, state_a])  # an older revision acknowledged late changes nothing
    assert await db.store.recompute([a, b]) == []
    assert await db.store.get(new_listing()) is None
    assert await db.store.recompute([]) == []
    await db.store.mark_published([])


async def test_concurrent_recomputations_serialise_without_deadlock(db: Db) -> None:
    a, b = new_listing(), new_listing()
    for round_ in range(10):
        await write(db.pool, db.images, result(a, f"{round_}", round_))
        await write(db.pool, db.images, result(b, f"{round_}", round_, "interior", banner=round_ % 2 == 0))
        first, second = await asyncio.wait_for(
            asyncio.gather(db.store.recompute([a, b]), db.store.recompute([b, a])), timeout=30
        )
        # Serialised: the second to take the locks finds the first's states stored and returns them as stored.
        assert [(s, s.revision, s.updated_at) for s in first] == [(s, s.revision, s.updated_at) for s in second]
        assert [s.revision for s in first] == [round_ + 1, round_ + 1]
        await db.store.mark_published(first)
    for listing in (a, b):
        stored = await db.store.get(listing)
        assert stored is not None and (stored.image_count, stored.revision) == (10, 10)


async def test_recompute_reads_rows_committed_while_it_waited_for_the_lock(db: Db) -> None:
    listing = new_listing()
    await write(db.pool, db.images, result(listing, "1", 0))
    async with db.pool.acquire() as holder:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT pg_advisory_xact_lock($1::int, hashtext($2))", LISTING_LOCK_SPACE, listing)
        task = asyncio.create_task(db.store.recompute([listing]))
        await _until_waiting_for_advisory_lock(db.pool)
        await write(db.pool, db.images, result(listing, "2", 1, "rear"))  # committed while the worker waits
        await tx.commit()
        [state] = await asyncio.wait_for(task, timeout=10)
    assert state.feed == (f"{listing}/1", f"{listing}/2")


async def test_a_cancelled_recomputation_changes_nothing(db: Db) -> None:
    listing = new_listing()
    await write(db.pool, db.images, result(listing, "1", 0))
    async with db.pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT pg_advisory_xact_lock($1::int, hashtext($2))", LISTING_LOCK_SPACE, listing)
        task = asyncio.create_task(db.store.recompute([listing]))
        await _until_waiting_for_advisory_lock(db.pool)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await db.store.get(listing) is None
    [state] = await db.store.recompute([listing])
    assert state.feed == (f"{listing}/1",)


async def _until_waiting_for_advisory_lock(pool: asyncpg.Pool, timeout_s: float = 10.0) -> None:
    """Wait until some session waits for a listing lock (the recomputation under test)."""
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = $1::oid"
    for _ in range(int(timeout_s / 0.02)):
        if await pool.fetchval(query, LISTING_LOCK_SPACE):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no recomputation waited for a listing lock within {timeout_s} s")


async def test_an_empty_state_is_published_only_to_end_a_listing_subscribers_saw(db: Db) -> None:
    """A removal before the listing's first result publishes nothing (no transient empty listing);
    a listing that loses its last image publishes its empty state (the actor's tombstone), once."""
    listing = new_listing()
    await write(db.pool, db.images, Event(listing, f"{listing}/1", 5, None))  # removed before it was classified
    assert await db.store.recompute([listing]) == []
    stored = await db.store.get(listing)
    assert stored is not None and stored.image_count == 0 and stored.revision == 1
    await write(db.pool, db.images, result(listing, "2", 0))
    [first] = await db.store.recompute([listing])
    assert (first.image_count, first.revision) == (1, 2)
    await db.store.mark_published([first])
    await write(db.pool, db.images, Event(listing, f"{listing}/2", 9, None))
    [gone] = await db.store.recompute([listing])
    assert (gone.image_count, gone.hero_reason, gone.revision) == (0, "no_images", 3)
    assert await db.store.recompute([listing]) == [gone], "returned until the broker acknowledges it"
    await db.store.mark_published([gone])
    assert await db.store.recompute([listing]) == []
