"""Re-queue stored images onto the input topic, at a bounded rate, so the active model classifies them again.

Events carry the row's own ``event_time``: the upsert then replaces a row only when the new
model was promoted later (or, between models of one promotion, its version is higher), and a
genuinely newer event for the image still wins. After a rollback, ``model_versions`` selects the
rows the withdrawn model wrote.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from .feed import feed

PAGE_ROWS = 1000  # rows read per query, and most events awaiting the broker


@dataclass(frozen=True, slots=True)
class Selection:
    """Which rows of the classification table to re-queue; every given filter must hold."""

    listings: tuple[str, ...] = ()
    since: datetime | None = None  # classified_at >= since
    until: datetime | None = None  # classified_at < until
    model_version_below: str | None = None
    everything: bool = False
    model_versions: tuple[str, ...] = ()  # rows written by exactly these versions (a withdrawn model's)

    def is_empty(self) -> bool:
        return not (
            self.listings
            or self.since
            or self.until
            or self.model_version_below
            or self.model_versions
            or self.everything
        )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def has_deleted_column(conn: asyncpg.Connection, table: str) -> bool:
    """Whether the table has a ``deleted`` column (rows marked deleted are never re-queued)."""
    found = await conn.fetchval(
        """SELECT 1 FROM information_schema.columns
        WHERE table_name = $1 AND column_name = 'deleted' AND table_schema = ANY (current_schemas(false))""",
        table,
    )
    return found is not None


def where_clause(selection: Selection, deleted_column: bool) -> tuple[str, list[object]]:
    """SQL conditions and their arguments for a selection."""
    conditions: list[str] = ["url IS NOT NULL"]  # tombstones of deleted images have none
    args: list[object] = []

    def add(sql: str, value: object) -> None:
        args.append(value)
        conditions.append(sql.format(f"${len(args)}"))

    if selection.listings:
        add("listing_id = ANY({}::text[])", list(selection.listings))
    if selection.since is not None:
        add("classified_at >= {}", selection.since)
    if selection.until is not None:
        add("classified_at < {}", selection.until)
    if selection.model_version_below is not None:
        # compared as numbers (2026.11.30.10 > 2026.11.30.9), by the function the store's migrations create
        add("processor_version_key(model_version) < processor_version_key({})", selection.model_version_below)
    if selection.model_versions:
        add("model_version = ANY({}::text[])", list(selection.model_versions))
    if deleted_column:
        conditions.append("deleted IS NOT TRUE")
    return " AND ".join(conditions), args


def event_bytes(row: asyncpg.Record) -> bytes:
    """The input event for a stored row."""
    event: dict[str, object] = {"image_id": row["image_id"], "listing_id": row["listing_id"], "url": row["url"]}
    if row["position_index"] is not None:
        event["position_index"] = row["position_index"]
    event["event_time"] = row["event_time"].isoformat()
    return orjson.dumps(event)


async def _rows(pool: asyncpg.Pool, table: str, selection: Selection) -> AsyncIterator[tuple[int, asyncpg.Record]]:
    """(total, row) pairs in image_id order, a page at a time (keyset: no transaction held for hours)."""
    async with pool.acquire() as conn:
        where, args = where_clause(selection, await has_deleted_column(conn, table))
        total = await conn.fetchval(f"SELECT count(*) FROM {_ident(table)} WHERE {where}", *args)
    query = (
        f"SELECT image_id, listing_id, url, position_index, event_time FROM {_ident(table)} "
        f"WHERE {where} AND image_id > ${len(args) + 1} ORDER BY image_id LIMIT {PAGE_ROWS}"
    )
    last = ""
    while True:
        page = await pool.fetch(query, *args, last)
        for row in page:
            yield total, row
        if len(page) < PAGE_ROWS:
            return
        last = page[-1]["image_id"]


async def reclassify(
    pool: asyncpg.Pool,
    table: str,
    broker_url: str,
    topic: str,
    selection: Selection,
    rate_per_s: float,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Send one input event per selected row, keyed by listing_id; return how many the broker confirmed.

    ``progress(sent, total)`` is called after each event is handed to the producer.
    """
    if selection.is_empty():
        raise ValueError("nothing selected: give a filter, or everything=True")
    total = 0

    async def events() -> AsyncIterator[tuple[bytes | None, bytes]]:
        nonlocal total
        async for count, row in _rows(pool, table, selection):
            total = count
            yield row["listing_id"].encode(), event_bytes(row)

    def sent_so_far(sent: int) -> None:
        if progress is not None:
            progress(sent, total)

    return await feed(broker_url, topic, events(), rate_per_s, sent_so_far, window=PAGE_ROWS)


__all__ = ["Selection", "event_bytes", "has_deleted_column", "reclassify", "where_clause"]
