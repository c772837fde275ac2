"""``processor dlq redrive``: put dead letters of chosen kinds back on the input topic (e.g. ``fetch_failed``
after a CDN outage). Idempotent: a dead letter is marked ``redriven_at`` once the broker confirmed its
event, and marked ones are never sent again; a redriven event ends as a row or a new dead letter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import click

from .cli import settings_options
from .feed import feed
from .settings import Settings
from .store import DLQ_TABLE

PAGE = 500


async def redrive(
    pool: asyncpg.Pool,
    broker_url: str,
    topic: str,
    kinds: tuple[str, ...],
    sources: tuple[str, ...],
    since: datetime | None = None,
    rate_per_s: float = 200.0,
) -> int:
    """Send the raw event of every not yet redriven dead letter of ``kinds`` from ``sources`` topics; mark
    each page redriven after the broker confirmed it. Returns how many were sent."""
    select = f"""
        SELECT source_topic, source_partition, source_offset, listing_id, raw FROM {DLQ_TABLE}
        WHERE error_kind = ANY($1::text[]) AND source_topic = ANY($2::text[]) AND redriven_at IS NULL
          AND ($3::timestamptz IS NULL OR failed_at >= $3)
        ORDER BY failed_at, source_topic, source_partition, source_offset LIMIT {PAGE}
    """
    mark = f"""
        UPDATE {DLQ_TABLE} SET redriven_at = now() FROM unnest($1::text[], $2::int[], $3::bigint[]) AS d(t, p, o)
        WHERE source_topic = d.t AND source_partition = d.p AND source_offset = d.o
    """
    sent = 0
    while page := await pool.fetch(select, list(kinds), list(sources), since):
        sent += await feed(broker_url, topic, _events(page), rate_per_s)
        keys = [
            [r["source_topic"] for r in page],
            [r["source_partition"] for r in page],
            [r["source_offset"] for r in page],
        ]
        await pool.execute(mark, *keys)
    return sent


async def _events(page: list[asyncpg.Record]) -> AsyncIterator[tuple[bytes | None, bytes]]:
    for row in page:
        yield (row["listing_id"].encode() if row["listing_id"] else None), bytes(row["raw"])


@click.group()
def dlq() -> None:
    """Dead letters."""


@dlq.command("redrive")
@click.option("--kind", "kinds", multiple=True, required=True, help="Error kind to redrive (repeatable).")
@click.option("--since", type=click.DateTime(), default=None, help="Only dead letters failed at or after (UTC).")
@click.option("--rate", "rate_per_s", default=200.0, show_default=True, help="Events per second at most.")
@settings_options
def redrive_command(settings: Settings, kinds: tuple[str, ...], since: datetime | None, rate_per_s: float) -> None:
    """Re-queue dead letters of the given kinds onto the input topic, each at most once."""
    from datetime import UTC

    async def run() -> int:
        pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=2)
        try:
            sources = (settings.input_topic, settings.backfill_topic)
            when = since.replace(tzinfo=UTC) if since is not None else None
            return await redrive(pool, settings.broker_url, settings.input_topic, kinds, sources, when, rate_per_s)
        finally:
            await pool.close()

    click.echo(f"redrove {asyncio.run(run())} dead letters onto {settings.input_topic}", err=True)
