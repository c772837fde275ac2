"""The labelling tables: versioned migrations applied under an advisory lock, and the pool they live in."""

from __future__ import annotations

import asyncpg

from ..migrations import apply as apply_migrations

SCHEMA_NAME = "labelling"  # its name in processor_schema_migrations

MIGRATIONS = [  # append, never edit
    """
    CREATE TABLE IF NOT EXISTS label_users (
        id serial PRIMARY KEY,
        username text NOT NULL UNIQUE,
        password_hash text NOT NULL,
        role text NOT NULL CHECK (role IN ('admin', 'labeller')),
        active boolean NOT NULL DEFAULT true,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS label_sessions (
        token_hash bytea PRIMARY KEY,
        user_id integer NOT NULL REFERENCES label_users ON DELETE CASCADE,
        csrf_token text NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE TABLE IF NOT EXISTS label_sign_in_failures (
        key text NOT NULL,
        failed_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS label_sign_in_failures_key ON label_sign_in_failures (key, failed_at);
    CREATE TABLE IF NOT EXISTS label_guidelines (
        version serial PRIMARY KEY,
        body text NOT NULL,
        created_by integer REFERENCES label_users,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS label_tasks (
        image_id text PRIMARY KEY,
        listing_id text NOT NULL,
        url text NOT NULL,
        reason text NOT NULL CHECK (reason IN ('banner', 'position', 'random', 'admin')),
        uncertainty real NOT NULL,
        model_version text NOT NULL,
        model_banner_score real,
        model_position text,
        status text NOT NULL DEFAULT 'open'
            CHECK (status IN ('open', 'final', 'review', 'resolved', 'discarded')),
        votes integer NOT NULL DEFAULT 0,
        skips integer NOT NULL DEFAULT 0,
        banner boolean,
        position text,
        decided_by integer REFERENCES label_users,
        decided_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS label_tasks_status ON label_tasks (status, votes DESC, created_at);
    CREATE TABLE IF NOT EXISTS label_answers (
        image_id text NOT NULL REFERENCES label_tasks ON DELETE CASCADE,
        user_id integer NOT NULL REFERENCES label_users,
        shown_at timestamptz NOT NULL DEFAULT now(),
        verdict text CHECK (verdict IN ('label', 'unsure', 'skip')),
        banner boolean,
        position text,
        guidelines_version integer REFERENCES label_guidelines,
        answered_at timestamptz,
        PRIMARY KEY (image_id, user_id)
    );
    CREATE INDEX IF NOT EXISTS label_answers_user ON label_answers (user_id, verdict);
    """,
    # Imported photos (a folder or a manifest) and per-image consensus: an import can ask for one labeller
    # on most images and two who must agree on a share of them (agreement figures); NULL: the app's K and N.
    """
    ALTER TABLE label_tasks DROP CONSTRAINT IF EXISTS label_tasks_reason_check;
    ALTER TABLE label_tasks ADD CONSTRAINT label_tasks_reason_check
        CHECK (reason IN ('banner', 'position', 'random', 'admin', 'import'));
    ALTER TABLE label_tasks ADD COLUMN IF NOT EXISTS agree integer CHECK (agree >= 1);
    ALTER TABLE label_tasks ADD COLUMN IF NOT EXISTS max_labellers integer CHECK (max_labellers >= agree);
    CREATE TABLE IF NOT EXISTS label_image_dirs (
        path text PRIMARY KEY,
        added_at timestamptz NOT NULL DEFAULT now()
    );
    """,
    # The model's suggestion as drawn when the image was shown: suggestion_shown NULL when the model had none,
    # false when hidden on this draw (random-sample images, and a share of the rest, to measure its pull).
    """
    ALTER TABLE label_answers ADD COLUMN IF NOT EXISTS suggestion_shown boolean,
        ADD COLUMN IF NOT EXISTS suggested_banner boolean, ADD COLUMN IF NOT EXISTS suggested_position text;
    """,
]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def create_pool(dsn: str, db_schema: str = "", max_size: int = 8) -> asyncpg.Pool:
    """A pool whose search path starts at ``db_schema`` (created if missing) when one is given."""
    settings = {"search_path": f"{_ident(db_schema)}, public"} if db_schema else {}
    if db_schema:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(db_schema)}")
        finally:
            await conn.close()
    return await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, server_settings=settings)


async def migrate(pool: asyncpg.Pool) -> int:
    """Apply pending migrations; return the schema version."""
    return await apply_migrations(pool, SCHEMA_NAME, MIGRATIONS)
