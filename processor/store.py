"""Postgres: versioned schema migrations and set-based idempotent writes.

A replayed event changes nothing; a newer event time, or the same event classified
by a newer model version, replaces the row. Dead letters are keyed by their source
offset, so replays do not duplicate them either.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg

from .events import Classification, DeadLetter

log = logging.getLogger(__name__)
MIGRATION_LOCK = 0x6C69_7031  # pg advisory lock id: workers starting together migrate once
DLQ_TABLE = "image_dead_letters"


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
    ]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: str) -> str:
    return value.replace("\x00", "\ufffd")  # Postgres text cannot hold NUL


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
                event_time, classified_at, output_id, source_topic, source_partition, source_offset)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bool[], $6::real[],
                $7::text[], $8::jsonb[], $9::text[], $10::text[], $11::text[], $12::int[], $13::int[],
                $14::timestamptz[], $15::timestamptz[], $16::uuid[], $17::text[], $18::int[], $19::bigint[])
            ON CONFLICT (image_id) DO UPDATE SET
                listing_id = excluded.listing_id, url = excluded.url,
                position_index = excluded.position_index, has_banner = excluded.has_banner,
                banner_score = excluded.banner_score, position = excluded.position,
                position_scores = excluded.position_scores, model_name = excluded.model_name,
                model_version = excluded.model_version, content_hash = excluded.content_hash,
                width = excluded.width, height = excluded.height, event_time = excluded.event_time,
                classified_at = excluded.classified_at, output_id = excluded.output_id,
                source_topic = excluded.source_topic, source_partition = excluded.source_partition,
                source_offset = excluded.source_offset
            WHERE t.event_time < excluded.event_time
               OR (t.event_time = excluded.event_time AND t.model_version < excluded.model_version)
        """
        self._insert_dlq = f"""
            INSERT INTO {DLQ_TABLE} (source_topic, source_partition, source_offset, image_id, listing_id,
                error_kind, error_detail, attempts, raw, failed_at)
            SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::int[], $9::bytea[], $10::timestamptz[])
            ON CONFLICT DO NOTHING
        """

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._pool_size, command_timeout=30)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "PostgresStore.start() was not called"
        return self._pool

    async def migrate(self) -> int:
        """Apply pending migrations under an advisory lock; return the schema version."""
        steps = migrations(self.table)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute("""CREATE TABLE IF NOT EXISTS processor_schema_migrations (
                table_name text NOT NULL, version integer NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_name, version))""")
            done = await conn.fetchval(
                "SELECT coalesce(max(version), 0) FROM processor_schema_migrations WHERE table_name = $1", self.table
            )
            for version, sql in enumerate(steps[done:], start=done + 1):
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO processor_schema_migrations (table_name, version) VALUES ($1, $2)", self.table, version
                )
                log.info("migrated %s to schema version %d", self.table, version)
        return len(steps)

    async def write(self, results: Sequence[Classification], dead: Sequence[DeadLetter]) -> None:
        """Upsert results and insert dead letters in one transaction."""
        rows = _latest_per_image(results)
        dead = [d for d in dead if d.envelope.offset >= 0]
        async with self.pool.acquire() as conn, conn.transaction():
            if rows:
                await conn.execute(self._upsert, *_columns([_row(r) for r in rows], 19))
            if dead:
                await conn.execute(self._insert_dlq, *_columns([_dlq_row(d) for d in dead], 10))

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


def _latest_per_image(results: Sequence[Classification]) -> list[Classification]:
    """One row per image_id (Postgres refuses to update a row twice in one statement)."""
    latest: dict[str, Classification] = {}
    for r in results:
        old = latest.get(r.event.image_id)
        if old is None or (r.event_time, r.model_version) >= (old.event_time, old.model_version):
            latest[r.event.image_id] = r
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
        _text(d.detail)[:2000],
        d.attempts,
        src.value,
        d.failed_at,
    )
