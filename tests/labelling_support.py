"""Fixtures of the labelling tests: a Postgres schema of their own, seeded classifications, a running app.

A test module imports the fixtures it uses (``label_db_fixture``, ...; ``# noqa: F401``); pytest knows them by
their ``name`` (``label_db``, ...).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp import web

from processor.labelling.accounts import create_user
from processor.labelling.config import LabelConfig
from processor.labelling.schema import create_pool, migrate
from processor.labelling.server import create_app
from processor.labelling.web import POOL
from processor.settings import Settings
from processor.store import PostgresStore

POSITIONS = (
    "dashboard",
    "detail",
    "engine",
    "front",
    "front_three_quarter",
    "interior",
    "other",
    "rear",
    "rear_three_quarter",
    "side",
    "trunk",
)  # the shipped model's labels.position
PASSWORD = "correct horse battery"


def scores(confident: str | None) -> dict[str, float]:
    """Position scores: 0.9 on ``confident``, or flat (maximum entropy) when None."""
    if confident is None:
        return dict.fromkeys(POSITIONS, 1 / len(POSITIONS))
    rest = 0.1 / (len(POSITIONS) - 1)
    return {p: 0.9 if p == confident else rest for p in POSITIONS}


def entropy(position_scores: dict[str, float]) -> float:
    return -sum(p * math.log(p) for p in position_scores.values() if p > 0) / math.log(len(position_scores))


@dataclass
class LabelDb:
    """A test's own schema (the labelling tables) beside its own classification table (in public)."""

    settings: Settings
    config: LabelConfig
    pool: asyncpg.Pool

    async def classify(
        self,
        image_id: str,
        url: str,
        banner_score: float = 0.97,
        position: str | None = "front",
        listing_id: str = "listing-1",
        model_version: str = "2026.11.30.5",
    ) -> None:
        """Insert a row as a worker would have stored it."""
        position_scores = scores(position)
        await self.pool.execute(
            f'INSERT INTO "{self.settings.postgres_table}" (image_id, listing_id, url, position_index, has_banner,'
            " banner_score, position, position_scores, model_name, model_version, content_hash, width, height,"
            " event_time, classified_at, output_id) VALUES ($1, $2, $3, 0, $4, $5, $6, $7::jsonb, 'listing-image-cnn',"
            " $8, 'sha256:x', 640, 480, $9, $9, $10)",
            image_id,
            listing_id,
            url,
            banner_score >= 0.54,
            banner_score,
            max(position_scores, key=position_scores.__getitem__),
            json.dumps(position_scores),
            model_version,
            datetime(2026, 11, 29, 12, tzinfo=UTC),
            uuid.uuid4(),
        )

    async def user(self, username: str, role: str = "labeller") -> int:
        return await create_user(self.pool, username, PASSWORD, role)  # type: ignore[arg-type]


@pytest.fixture(name="label_db")
async def label_db_fixture(settings: Settings) -> AsyncIterator[LabelDb]:
    schema = f"label_{uuid.uuid4().hex[:10]}"
    store = PostgresStore(settings.postgres_dsn, settings.postgres_table)
    await store.start()
    await store.migrate()
    await store.close()
    config = LabelConfig(db_schema=schema, sign_in_attempts=3, assignment_ttl_s=600)
    pool = await create_pool(settings.postgres_dsn, schema, max_size=4)
    await migrate(pool)
    try:
        yield LabelDb(settings, config, pool)
    finally:
        await pool.execute(f'DROP SCHEMA "{schema}" CASCADE; DROP TABLE IF EXISTS "{settings.postgres_table}"')
        await pool.close()


@dataclass
class RunningApp:
    base_url: str
    app: web.Application

    @property
    def pool(self) -> asyncpg.Pool:
        return self.app[POOL]


@pytest.fixture(name="label_app")
async def label_app_fixture(label_db: LabelDb) -> AsyncIterator[RunningApp]:
    app = create_app(label_db.settings, label_db.config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield RunningApp(f"http://127.0.0.1:{port}", app)
    finally:
        await runner.cleanup()
