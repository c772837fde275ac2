"""Waiting on storage with timeouts (never plain sleeps)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import asyncpg

from processor.dev.harness import settings_env
from processor.settings import DEFAULT_MODEL_DIR, Settings

SHIPPED_MODEL_NAME = json.loads((DEFAULT_MODEL_DIR / "metadata.json").read_text())["name"]


def processor_command(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``processor ARGS`` with these settings in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "processor", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def wait_for_rows(settings: Settings, image_ids: set[str], timeout_s: float = 60.0) -> dict[str, str]:
    """Wait until every id is a classification or a dead letter; return id -> 'ok' | error kind."""
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        found: dict[str, str] = {}
        while time.monotonic() < deadline:
            found = {}
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", settings.postgres_table)
            if exists:
                for r in await conn.fetch(f'SELECT image_id FROM "{settings.postgres_table}"'):
                    found[r["image_id"]] = "ok"
                for r in await conn.fetch(
                    "SELECT image_id, error_kind FROM image_dead_letters WHERE source_topic = $1", settings.input_topic
                ):
                    found.setdefault(r["image_id"] or "", r["error_kind"])
            if image_ids <= found.keys():
                return found
            await asyncio.sleep(0.2)
        missing = sorted(image_ids - found.keys())
        raise AssertionError(f"{len(missing)} events not stored after {timeout_s} s: {missing[:10]}")
    finally:
        await conn.close()


async def connect(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.postgres_dsn)


async def fetch_rows(settings: Settings) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        return await conn.fetch(f'SELECT * FROM "{settings.postgres_table}" ORDER BY image_id')
    finally:
        await conn.close()


async def fetch_dead_letters(settings: Settings) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        return await conn.fetch(
            "SELECT * FROM image_dead_letters WHERE source_topic = $1 ORDER BY source_partition, source_offset",
            settings.input_topic,
        )
    finally:
        await conn.close()
