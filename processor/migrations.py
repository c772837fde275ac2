"""Versioned schema migrations, shared by every table the processor owns.

Each owner (a table name, or a component such as the labelling app) has an ordered list of SQL steps:
append, never edit. ``apply`` runs the pending ones in one transaction under an advisory lock, so
workers starting together migrate once, and records each in ``processor_schema_migrations``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg

log = logging.getLogger(__name__)
MIGRATION_LOCK = 0x6C69_7031  # pg advisory lock id: one migration at a time, whatever the owner


async def apply(pool: asyncpg.Pool, owner: str, steps: Sequence[str]) -> int:
    """Apply ``owner``'s pending steps; return its schema version (the number of steps)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("""CREATE TABLE IF NOT EXISTS processor_schema_migrations (
            table_name text NOT NULL, version integer NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_name, version))""")
        done = await conn.fetchval(
            "SELECT coalesce(max(version), 0) FROM processor_schema_migrations WHERE table_name = $1", owner
        )
        for version, sql in enumerate(steps[done:], start=done + 1):
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO processor_schema_migrations (table_name, version) VALUES ($1, $2)", owner, version
            )
            log.info("migrated %s to schema version %d", owner, version)
    return len(steps)
