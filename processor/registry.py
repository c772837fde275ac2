"""The model registry: which model directory the workers should run, and which ran before.

One row per (name, version) in ``model_versions``; exactly one row is ``active`` (a partial
unique index enforces it). ``promote`` makes a directory the active model, ``active`` tells
the workers which one that is; rolling back is promoting the old directory again.

Every promotion takes the next ``generation`` (1, 2, 3...), re-promoting an old directory too. The
workers stamp each result with the generation of the model that made it, and the image store lets
the later promotion win for one event: after a rollback, ``processor reclassify`` replaces the bad
model's rows even though its version string is higher.
Asyncpg only: the workers import this module.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from .migrations import apply as apply_migrations

TABLE = "model_versions"
METADATA_FILE = "metadata.json"

MIGRATIONS = [  # append, never edit
    f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        name text NOT NULL,
        version text NOT NULL,
        model_dir text NOT NULL,
        evaluation jsonb,
        promoted_at timestamptz NOT NULL DEFAULT now(),
        promoted_by text NOT NULL,
        active boolean NOT NULL DEFAULT false,
        PRIMARY KEY (name, version)
    );
    CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_one_active ON {TABLE} (active) WHERE active;
    """,
    # 2: promotion order; rows promoted before it are numbered by promoted_at.
    f"""
    ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS generation bigint;
    UPDATE {TABLE} t SET generation = o.n FROM (
        SELECT name, version, row_number() OVER (ORDER BY promoted_at, name, version) AS n FROM {TABLE}
    ) o WHERE t.name = o.name AND t.version = o.version;
    ALTER TABLE {TABLE} ALTER COLUMN generation SET NOT NULL;
    CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_generation ON {TABLE} (generation);
    """,
]


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A registered model directory."""

    name: str
    version: str
    model_dir: Path
    evaluation: dict[str, Any] | None
    promoted_at: datetime
    promoted_by: str
    active: bool
    generation: int  # promotion order: the results of a later promotion win over an earlier one's


async def migrate(pool: asyncpg.Pool) -> int:
    """Create or migrate ``model_versions`` (idempotent, under the migration lock); return its version."""
    return await apply_migrations(pool, TABLE, MIGRATIONS)


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """A model directory's metadata.json (name, version, labels, ...)."""
    meta: dict[str, Any] = json.loads((model_dir / METADATA_FILE).read_text())
    return meta


def _resolve_and_read(model_dir: Path) -> tuple[Path, dict[str, Any]]:
    return model_dir.resolve(), read_metadata(model_dir)


class RegistryConflict(ValueError):
    """Another directory is registered under the same model name and version."""


async def promote(
    pool: asyncpg.Pool,
    model_dir: Path,
    evaluation: dict[str, Any] | None = None,
    promoted_by: str = "unknown",
    replace: bool = False,
) -> ModelVersion:
    """Make ``model_dir`` the one active model (registering it, or re-activating it for a rollback).

    Checks nothing but its metadata: the CLI checks that the model loads and fits the running one. A
    different directory under a registered name and version is refused unless ``replace``: results name
    the model by version, so two sets of weights under one version could not be told apart.
    """
    model_dir, meta = await asyncio.to_thread(_resolve_and_read, model_dir)
    payload = None if evaluation is None else json.dumps(evaluation)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")  # one promotion at a time
        registered = await conn.fetchval(
            f"SELECT model_dir FROM {TABLE} WHERE name = $1 AND version = $2", str(meta["name"]), str(meta["version"])
        )
        if registered is not None and registered != str(model_dir) and not replace:
            raise RegistryConflict(
                f"{meta['name']} {meta['version']} is registered from {registered}; give {model_dir} a new "
                "version in its metadata.json (or --replace)"
            )
        await conn.execute(f"UPDATE {TABLE} SET active = false WHERE active")
        row = await conn.fetchrow(
            f"""INSERT INTO {TABLE} (name, version, model_dir, evaluation, promoted_at, promoted_by, active,
                generation)
            VALUES ($1, $2, $3, $4::jsonb, now(), $5, true, (SELECT coalesce(max(generation), 0) + 1 FROM {TABLE}))
            ON CONFLICT (name, version) DO UPDATE SET model_dir = excluded.model_dir,
                evaluation = coalesce(excluded.evaluation, {TABLE}.evaluation),
                promoted_at = excluded.promoted_at, promoted_by = excluded.promoted_by, active = true,
                generation = excluded.generation
            RETURNING *""",
            str(meta["name"]),
            str(meta["version"]),
            str(model_dir),
            payload,
            promoted_by,
        )
    return _version(row)


async def active(pool: asyncpg.Pool) -> ModelVersion | None:
    """The active model, or None when nothing was ever promoted (run settings.model_dir then)."""
    row = await pool.fetchrow(f"SELECT * FROM {TABLE} WHERE active")
    return None if row is None else _version(row)


async def history(pool: asyncpg.Pool) -> list[ModelVersion]:
    """Every registered model, the most recently promoted first."""
    rows = await pool.fetch(f"SELECT * FROM {TABLE} ORDER BY generation DESC")
    return [_version(r) for r in rows]


def _version(row: asyncpg.Record) -> ModelVersion:
    evaluation = row["evaluation"]
    return ModelVersion(
        name=row["name"],
        version=row["version"],
        model_dir=Path(row["model_dir"]),
        evaluation=None if evaluation is None else json.loads(evaluation),
        promoted_at=row["promoted_at"],
        promoted_by=row["promoted_by"],
        active=row["active"],
        generation=row["generation"],
    )


__all__ = ["ModelVersion", "RegistryConflict", "active", "history", "migrate", "promote", "read_metadata"]
