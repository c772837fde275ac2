"""``processor backfill``: a catalogue (CSV or JSON lines file, or a Postgres query) onto the backfill
topic, at a bounded rate with a progress bar and ETA. Workers consume that topic at a lower priority
than the main one, so the daily changes keep their latency while millions of images are backfilled."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import click
import orjson

from .cli import settings_options
from .feed import feed
from .settings import Settings
from .topics import ensure_topics

FIELDS = ("image_id", "listing_id", "url", "position_index", "event_time", "deleted")


def file_events(path: Path) -> Iterator[dict[str, Any]]:
    """Events of a JSON-lines file, or of a CSV file whose header names the event's fields."""
    with path.open(newline="") as fh:
        if path.suffix.lower() == ".csv":
            for row in csv.DictReader(fh):
                yield _from_csv(row)
            return
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def _from_csv(row: dict[str, str]) -> dict[str, Any]:
    event: dict[str, Any] = {k: v for k, v in row.items() if k in FIELDS and v not in (None, "")}
    if "position_index" in event:
        event["position_index"] = int(event["position_index"])
    if "deleted" in event:
        event["deleted"] = event["deleted"].strip().lower() in ("1", "true", "yes")
    return event


def count_file(path: Path) -> int:
    with path.open("rb") as fh:
        lines = sum(1 for line in fh if line.strip())
    return lines - 1 if path.suffix.lower() == ".csv" else lines


async def query_events(pool: asyncpg.Pool, query: str) -> AsyncIterator[dict[str, Any]]:
    """Rows of a query whose columns are named after the event's fields, streamed with a cursor."""
    async with pool.acquire() as conn, conn.transaction():
        async for row in conn.cursor(query, prefetch=1000):
            names = set(row.keys())
            event = {k: row[k] for k in FIELDS if k in names and row[k] is not None}
            if "event_time" in event and not isinstance(event["event_time"], str):
                event["event_time"] = event["event_time"].isoformat()
            yield event


async def keyed(
    events: AsyncIterator[dict[str, Any]] | Iterator[dict[str, Any]],
) -> AsyncIterator[tuple[bytes | None, bytes]]:
    """(listing_id key, JSON value) pairs; an event without a usable listing id goes unkeyed (its worker
    dead-letters it if it is invalid)."""
    if isinstance(events, Iterator):
        for event in events:
            yield _key(event), orjson.dumps(event)
        return
    async for event in events:
        yield _key(event), orjson.dumps(event)


def _progress(bar: Any) -> Callable[[int], None]:
    def update(sent: int) -> None:
        bar.update(sent - bar.n)

    return update


def _key(event: dict[str, Any]) -> bytes | None:
    listing = event.get("listing_id")
    return listing.encode() if isinstance(listing, str) else None


@click.command()
@click.argument("catalogue", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=False)
@click.option(
    "--query", default=None, help="Instead of a file: a Postgres query with columns image_id, listing_id, url..."
)
@click.option("--rate", "rate_per_s", default=500.0, show_default=True, help="Events per second at most.")
@settings_options
def backfill(settings: Settings, catalogue: Path | None, query: str | None, rate_per_s: float) -> None:
    """Feed a catalogue (CSV / JSON lines, or --query) onto the backfill topic, which workers consume at
    a lower priority than the daily events."""
    from tqdm import tqdm

    if (catalogue is None) == (query is None):
        raise click.UsageError("give a CATALOGUE file or --query, not both")
    topic = settings.backfill_topic

    async def run() -> int:
        await ensure_topics(settings.broker_url, [topic], settings.topic_partitions, settings.topic_replication_factor)
        if catalogue is not None:
            with tqdm(total=count_file(catalogue), unit="event", desc="backfill") as bar:
                events = keyed(file_events(catalogue))
                return await feed(settings.broker_url, topic, events, rate_per_s, _progress(bar))
        assert query is not None
        pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=2)
        try:
            total = await pool.fetchval(f"SELECT count(*) FROM ({query}) AS q")
            with tqdm(total=total, unit="event", desc="backfill") as bar:
                events = keyed(query_events(pool, query))
                return await feed(settings.broker_url, topic, events, rate_per_s, _progress(bar))
        finally:
            await pool.close()

    click.echo(f"sent {asyncio.run(run())} events to {topic}", err=True)
