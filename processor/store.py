"""Postgres: versioned schema migrations and set-based idempotent writes.

One row per image: the latest of its results and deletions (tombstones). A row is replaced by
an outcome that is not older: ordered by (event_time, deleted, model generation, model version
as numbers), so a newer event wins, a deletion wins a tie, for the same event the model promoted
last wins (the registry's generation: after a rollback the old model's results replace the bad
one's), then the higher version, and a replay re-applies the same content. ``write`` returns the
image ids it applied, so the caller publishes exactly what Postgres holds. Dead letters are keyed
by their source offset, so replays do not duplicate them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from .events import DETAIL_LIMIT, Classification, DeadLetter, Deletion, Outcome, clean_text
from .migrations import apply as migrations_apply

log = logging.getLogger(__name__)
DLQ_TABLE = "image_dead_letters"
DLQ_ROW_RAW_LIMIT = 64 * 1024  # bytes of the original event kept in a dead-letter row
# The stored row is not newer than the incoming one (see the module docstring).
NOT_OLDER = """(t.event_time, t.deleted, t.model_generation, processor_version_key(t.model_version))
    <= (excluded.event_time, excluded.deleted, excluded.model_generation,
        processor_version_key(excluded.model_version))"""


def migrations(table: str) -> list[str]:
    """Schema versions, in order; append, never edit."""
    t = _ident(table)
    return [
        f"""
        CREATE TABLE IF NOT EXISTS {t} (
            image_id text PRIMARY KEY,
            listing_id text NOT NULL,
            url text NOT NULL,
            position_index integer,
            has_banner boolean NOT NULL,
            banner_score real NOT NULL,
            position text NOT NULL,
            position_scores jsonb NOT NULL,
            model_name text NOT NULL,
            model_version text NOT NULL,
            content_hash text NOT NULL,
            width integer NOT NULL,
            height integer NOT NULL,
            event_time timestamptz NOT NULL,
            classified_at timestamptz NOT NULL,
            output_id uuid NOT NULL,
            source_topic text,
            source_partition integer,
            source_offset bigint
        );
        CREATE INDEX IF NOT EXISTS {_ident(table + "_listing_idx")} ON {t} (listing_id, position_index);
        CREATE TABLE IF NOT EXISTS {DLQ_TABLE} (
            source_topic text NOT NULL,
            source_partition integer NOT NULL,
            source_offset bigint NOT NULL,
            image_id text,
            listing_id text,
            error_kind text NOT NULL,
            error_detail text NOT NULL,
            attempts integer NOT NULL,
            raw bytea NOT NULL,
            failed_at timestamptz NOT NULL,
            PRIMARY KEY (source_topic, source_partition, source_offset)
        );
        CREATE INDEX IF NOT EXISTS image_dead_letters_image_idx ON {DLQ_TABLE} (image_id);
        """,
        # 2: model versions compared as numbers; deletions (tombstones) as rows with deleted = true.
        f"""
        CREATE OR REPLACE FUNCTION processor_version_key(v text) RETURNS numeric[]
            LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT coalesce(array_agg(coalesce(nullif(regexp_replace(p, '\\D', '', 'g'), '')::numeric, 0)
                ORDER BY n), '{{}}')
            FROM unnest(string_to_array(coalesce(v, ''), '.')) WITH ORDINALITY AS parts(p, n) $$;
        ALTER TABLE {t} ADD COLUMN IF NOT EXISTS deleted boolean NOT NULL DEFAULT false;
        ALTER TABLE {t} ALTER COLUMN url DROP NOT NULL, ALTER COLUMN has_banner DROP NOT NULL,
            ALTER COLUMN banner_score DROP NOT NULL, ALTER COLUMN position DROP NOT NULL,
            ALTER COLUMN position_scores DROP NOT NULL, ALTER COLUMN model_name DROP NOT NULL,
            ALTER COLUMN model_version DROP NOT NULL, ALTER COLUMN content_hash DROP NOT NULL,
            ALTER COLUMN width DROP NOT NULL, ALTER COLUMN height DROP NOT NULL,
            ALTER COLUMN output_id DROP NOT NULL;
        """,
        # 3: dead letters remember when they were redriven (processor dlq redrive sends each once).
        f"ALTER TABLE {DLQ_TABLE} ADD COLUMN IF NOT EXISTS redriven_at timestamptz",
        # 4: the registry's promotion order of the model that wrote the row (0: a model not from the registry).
        f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS model_generation bigint NOT NULL DEFAULT 0",
    ]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresStore:
    """A connection pool and the processor's statements."""

    def __init__(self, dsn: str, table: str = "image_classifications", pool_size: int = 4) -> None:
        self._dsn = dsn
        self.table = table
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        t = _ident(table)
        self._upsert = f"""
            INSERT INTO {t} AS t (image_id, listing_id, url, position_index, has_banner, banner_score,
                position, position_scores, model_name, model_version, content_hash, width, height,
                event_time, classified_at, output_id, source_topic, source_partition, source_offset,
                model_generation)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bool[], $6::real[],
                $7::text[], $8::jsonb[], $9::text[], $10::text[], $11::text[], $12::int[], $13::int[],
                $14::timestamptz[], $15::timestamptz[], $16::uuid[], $17::text[], $18::int[], $19::bigint[],
                $20::bigint[])
            ON CONFLICT (image_id) DO UPDATE SET
                listing_id = excluded.listing_id, url = excluded.url,
                position_index = excluded.position_index, has_banner = excluded.has_banner,
                banner_score = excluded.banner_score, position = excluded.position,
                position_scores = excluded.position_scores, model_name = excluded.model_name,
                model_version = excluded.model_version, content_hash = excluded.content_hash,
                width = excluded.width, height = excluded.height, event_time = excluded.event_time,
                classified_at = excluded.classified_at, output_id = excluded.output_id,
                source_topic = excluded.source_topic, source_partition = excluded.source_partition,
                source_offset = excluded.source_offset, model_generation = excluded.model_generation,
                deleted = false
            WHERE {NOT_OLDER}
            RETURNING image_id
        """
        self._tombstone = f"""
            INSERT INTO {t} AS t (image_id, listing_id, deleted, event_time, classified_at,
                source_topic, source_partition, source_offset)
            SELECT i, l, true, e, now(), st, sp, so
            FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::int[], $6::bigint[])
                AS x(i, l, e, st, sp, so)
            ON CONFLICT (image_id) DO UPDATE SET
                listing_id = excluded.listing_id, url = NULL, has_banner = NULL, banner_score = NULL,
                position = NULL, position_scores = NULL, model_name = NULL, model_version = NULL,
                content_hash = NULL, width = NULL, height = NULL, output_id = NULL, deleted = true,
                model_generation = excluded.model_generation,
                event_time = excluded.event_time, classified_at = excluded.classified_at,
                source_topic = excluded.source_topic, source_partition = excluded.source_partition,
                source_offset = excluded.source_offset
            WHERE {NOT_OLDER}
            RETURNING image_id
        """
        self._insert_dlq = f"""
            INSERT INTO {DLQ_TABLE} (source_topic, source_partition, source_offset, image_id, listing_id,
                error_kind, error_detail, attempts, raw, failed_at)
            SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::int[], $9::bytea[], $10::timestamptz[])
            ON CONFLICT DO NOTHING
        """

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=self._pool_size, command_timeout=30, init=_close_when_dead
        )

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close the pool; connections still busy after ``timeout_s`` (a dead server) are terminated."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout_s)
            except TimeoutError:
                pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "PostgresStore.start() was not called"
        return self._pool

    async def migrate(self) -> int:
        """Apply pending migrations of this table; return the schema version."""
        return await migrations_apply(self.pool, self.table, migrations(self.table))

    async def write(self, outcomes: Sequence[Outcome]) -> set[str]:
        """Upsert results and deletions, insert dead letters, in one transaction; return the image ids
        whose row now holds this batch's outcome (older ones than the stored row are not applied)."""
        latest = latest_per_image(o for o in outcomes if not isinstance(o, DeadLetter))
        rows = [o for o in latest if isinstance(o, Classification)]
        tombstones = [o for o in latest if isinstance(o, Deletion)]
        dead = [d for d in outcomes if isinstance(d, DeadLetter) and d.envelope.offset >= 0]
        applied: list[asyncpg.Record] = []
        async with self.pool.acquire() as conn, conn.transaction():
            if rows:
                applied += await conn.fetch(self._upsert, *_columns([_row(r) for r in rows], 20))
            if tombstones:
                applied += await conn.fetch(self._tombstone, *_columns([_tombstone_row(d) for d in tombstones], 6))
            if dead:
                await conn.execute(self._insert_dlq, *_columns([_dlq_row(d) for d in dead], 10))
        return {r["image_id"] for r in applied}

    async def ping(self) -> bool:
        """Whether Postgres answers a query now."""
        return bool(await self.pool.fetchval("SELECT 1"))

    async def fetch_all(self) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"SELECT * FROM {_ident(self.table)} ORDER BY listing_id, image_id"
        )
        return rows

    async def fetch_dead_letters(self) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.pool.fetch(
            f"SELECT * FROM {DLQ_TABLE} ORDER BY source_partition, source_offset"
        )
        return rows


def latest_per_image(outcomes: Iterable[Classification | Deletion]) -> list[Classification | Deletion]:
    """The newest outcome per image_id, by the order the upsert applies (Postgres refuses to update
    a row twice in one statement)."""
    latest: dict[str, Classification | Deletion] = {}
    for o in outcomes:
        old = latest.get(o.event.image_id)
        if old is None or o.order_key() >= old.order_key():
            latest[o.event.image_id] = o
    return list(latest.values())


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def _row(r: Classification) -> tuple[Any, ...]:
    e, src = r.event, r.envelope
    return (
        e.image_id,
        e.listing_id,
        e.url,
        e.position_index,
        r.has_banner,
        r.banner_score,
        r.position,
        json.dumps(r.position_scores),
        r.model_name,
        r.model_version,
        r.content_hash,
        r.width,
        r.height,
        r.event_time,
        r.classified_at,
        r.output_id,
        src.topic or None,
        src.partition if src.offset >= 0 else None,
        src.offset if src.offset >= 0 else None,
        r.model_generation,
    )


def _tombstone_row(d: Deletion) -> tuple[Any, ...]:
    src = d.envelope
    return (
        d.event.image_id,
        d.event.listing_id,
        d.event_time,
        src.topic or None,
        src.partition if src.offset >= 0 else None,
        src.offset if src.offset >= 0 else None,
    )


def _dlq_row(d: DeadLetter) -> tuple[Any, ...]:
    src = d.envelope
    return (
        src.topic,
        src.partition,
        src.offset,
        d.image_id,
        d.listing_id,
        d.kind,
        clean_text(d.detail, DETAIL_LIMIT),
        d.attempts,
        src.value[:DLQ_ROW_RAW_LIMIT],
        d.failed_at,
    )


# A connection whose packets go unanswered this long is closed by the kernel. Without it, a network
# partition leaves connections half-open: a write waits for an answer that never comes, and returning the
# connection to the pool waits forever too (asyncpg's release has no deadline), so a healed partition could
# leave the worker stuck (found by the fault harness, docs/operations/faults.md).
DEAD_CONNECTION_S = 30
KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5


async def _close_when_dead(conn: asyncpg.Connection) -> None:
    """TCP keepalive and a user timeout on a new TCP connection (Unix sockets need neither)."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
    sock.setsockopt(
        socket.IPPROTO_TCP, socket.TCP_KEEPCNT, (DEAD_CONNECTION_S - KEEPALIVE_IDLE_S) // KEEPALIVE_INTERVAL_S
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_CONNECTION_S * 1000)
