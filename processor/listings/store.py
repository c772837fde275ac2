"""Postgres for listing states: the ``listings`` table and set-based recomputation.

``recompute`` holds a transaction-scoped advisory lock per listing (taken in sorted key
order, so two workers never deadlock) while it reads the surviving image rows and writes
the states. Two workers recomputing one listing therefore run one after the other, and
the later one reads a later snapshot: the stored state is always that of the latest
committed image rows, whichever worker writes last.

Each change bumps the row's ``revision``; ``mark_published`` records the revision the
broker acknowledged. Until then ``recompute`` keeps returning the stored state (same
revision, same ``updated_at``), so a crash between storing and publishing loses nothing.

A state without images whose listing subscribers last saw without images too (never published,
or deleted) is stored as published at once: there is nothing to tell them, and an empty listing
published before its first result arrives would be a transient state a partner might show.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import orjson

from ..migrations import apply as apply_migrations
from .rules import ImageResult, ListingRules, ListingState, compute_state

log = logging.getLogger(__name__)
LISTING_LOCK_SPACE = 0x6C73_7431  # first key of the two-key advisory locks taken per listing


def migrations(table: str) -> list[str]:
    """Schema versions of the listings table, in order; append, never edit."""
    t = _ident(table)
    return [
        f"""
        CREATE TABLE IF NOT EXISTS {t} (
            listing_id text PRIMARY KEY,
            hero_image_id text,
            hero_reason text NOT NULL,
            coverage_score double precision NOT NULL,
            banner_share double precision NOT NULL,
            image_count integer NOT NULL,
            banner_free_count integer NOT NULL,
            model_versions text[] NOT NULL,
            state jsonb NOT NULL,
            state_hash text NOT NULL,
            revision bigint NOT NULL,
            published_revision bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL
        );
        """,
    ]


class ListingStore:
    """Listing states over an asyncpg pool owned by the caller."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        rules: ListingRules,
        images_table: str = "image_classifications",
        table: str = "listings",
    ) -> None:
        self._pool = pool
        self.rules = rules
        self.table = table
        t = _ident(table)
        self._lock = """
            SELECT count(pg_advisory_xact_lock($2::int, k)) FROM (
                SELECT DISTINCT hashtext(id) AS k FROM unnest($1::text[]) AS id ORDER BY k
            ) AS keys
        """
        self._select_images = f"""
            SELECT listing_id, image_id, position_index, has_banner, position, model_version
            FROM {_ident(images_table)} WHERE listing_id = ANY($1::text[]) AND NOT deleted
        """
        self._select_stored = f"""
            SELECT listing_id, state_hash, revision, published_revision, updated_at, image_count
            FROM {t} WHERE listing_id = ANY($1::text[])
        """
        self._upsert = f"""
            INSERT INTO {t} AS l (listing_id, hero_image_id, hero_reason, coverage_score, banner_share,
                image_count, banner_free_count, model_versions, state, state_hash, revision, updated_at)
            SELECT s.id, s.hero, s.reason, s.score, s.share, s.images, s.free,
                ARRAY(SELECT v FROM jsonb_array_elements_text(s.state -> 'model_versions') WITH ORDINALITY AS e(v, n)
                    ORDER BY n),
                s.state, s.hash, s.revision, s.at
            FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::int[], $7::int[],
                $8::jsonb[], $9::text[], $10::bigint[], $11::timestamptz[]) AS s(id, hero, reason, score, share,
                images, free, state, hash, revision, at)
            ON CONFLICT (listing_id) DO UPDATE SET
                hero_image_id = excluded.hero_image_id, hero_reason = excluded.hero_reason,
                coverage_score = excluded.coverage_score, banner_share = excluded.banner_share,
                image_count = excluded.image_count, banner_free_count = excluded.banner_free_count,
                model_versions = excluded.model_versions, state = excluded.state,
                state_hash = excluded.state_hash, revision = excluded.revision, updated_at = excluded.updated_at
        """
        self._mark_published = f"""
            UPDATE {t} AS l SET published_revision = greatest(l.published_revision, p.revision)
            FROM (SELECT id, max(revision) AS revision FROM unnest($1::text[], $2::bigint[]) AS u(id, revision)
                GROUP BY id) AS p
            WHERE l.listing_id = p.id
        """

    async def migrate(self) -> int:
        """Apply pending migrations of the listings table; return the schema version."""
        return await apply_migrations(self._pool, self.table, migrations(self.table))

    async def recompute(self, listing_ids: Iterable[str]) -> list[ListingState]:
        """Recompute the listings' states from their surviving image rows; store those that
        changed; return every state still to publish (changed now, or stored and not yet
        marked published), in listing_id order.

        One transaction and four statements whatever the batch size. A listing whose images
        are all deleted keeps a row whose state says ``no_images``.
        """
        ids = sorted(set(listing_ids))
        if not ids:
            return []
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(self._lock, ids, LISTING_LOCK_SPACE)
            rows = await conn.fetch(self._select_images, ids)
            stored = {r["listing_id"]: r for r in await conn.fetch(self._select_stored, ids)}
            now = datetime.now(UTC)  # after the lock: a later writer never stamps an earlier time
            images: dict[str, list[ImageResult]] = {i: [] for i in ids}
            for r in rows:
                images[r["listing_id"]].append(_image(r))
            states = [compute_state(i, images[i], self.rules, updated_at=now) for i in ids]
            changed, pending = _to_publish(states, stored)
            if changed:
                await conn.execute(self._upsert, *_columns(changed))
            published = {id(s) for s in pending}
            quiet = [s for s in changed if id(s) not in published]
            if quiet:  # nothing to tell subscribers (module docstring)
                await conn.execute(self._mark_published, [s.listing_id for s in quiet], [s.revision for s in quiet])
        return pending

    async def mark_published(self, states: Iterable[ListingState]) -> None:
        """Record that the broker acknowledged these states: ``recompute`` stops returning them."""
        published = [(s.listing_id, s.revision) for s in states]
        if published:
            await self._pool.execute(self._mark_published, *map(list, zip(*published, strict=True)))

    async def get(self, listing_id: str) -> ListingState | None:
        """The stored state of a listing, if it was ever computed."""
        state = await self._pool.fetchval(f"SELECT state FROM {_ident(self.table)} WHERE listing_id = $1", listing_id)
        if state is None:
            return None
        return ListingState.from_output(orjson.loads(state) if isinstance(state, str | bytes) else state)


def _to_publish(
    states: list[ListingState], stored: dict[str, asyncpg.Record]
) -> tuple[list[ListingState], list[ListingState]]:
    """The states to write (content changed: next revision) and all states to publish
    (those plus stored revisions not yet marked published, as they were stored), less empty
    states of listings subscribers last saw empty (module docstring)."""
    changed, pending = [], []
    for state in states:
        old = stored.get(state.listing_id)
        if old is None or old["state_hash"] != state.state_hash:
            state = replace(state, revision=(old["revision"] if old else 0) + 1)
            changed.append(state)
            if state.image_count == 0 and (
                old is None or (old["image_count"] == 0 and old["revision"] == old["published_revision"])
            ):
                continue
        elif old["revision"] > old["published_revision"]:
            state = replace(state, revision=old["revision"], updated_at=old["updated_at"])
        else:
            continue
        pending.append(state)
    return changed, pending


def _image(r: asyncpg.Record) -> ImageResult:
    return ImageResult(r["image_id"], r["position_index"], r["has_banner"], r["position"], r["model_version"])


def _columns(states: list[ListingState]) -> list[list[object]]:
    return [
        [s.listing_id for s in states],
        [s.hero_image_id for s in states],
        [str(s.hero_reason) for s in states],
        [s.coverage_score for s in states],
        [s.banner_share for s in states],
        [s.image_count for s in states],
        [s.banner_free_count for s in states],
        [orjson.dumps(s.to_output()).decode() for s in states],
        [s.state_hash for s in states],
        [s.revision for s in states],
        [s.updated_at for s in states],
    ]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
