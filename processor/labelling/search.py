"""The admin's view of every queued image: search by id, listing, labeller and state; discard in bulk.

The review queue shows only the disputed images; here the admin finds any image (open, stuck,
final, resolved or discarded) and can discard several at once: a broken photo, a listing that
was withdrawn. A discarded image leaves the queue and every export; answers given on it stay
(they still count in the labellers' answer totals).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

STATES = ("open", "review", "final", "resolved", "discarded")
MAX_TEXT_CHARS = 1000
MAX_DISCARD = 500  # images one bulk discard may name


@dataclass(frozen=True, slots=True)
class ImageQuery:
    """What the admin searches for; empty fields match everything."""

    text: str = ""  # a part of an image id or a listing id (case-insensitive)
    state: str = ""  # one of STATES
    labeller: str = ""  # a user name: images this person answered
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Found:
    """One page of matches and how many there are in all."""

    images: list[dict[str, Any]]
    total: int


SEARCH = """
    SELECT t.image_id, t.listing_id, t.status, t.reason, t.votes, t.skips, t.banner, t.position,
        coalesce((SELECT jsonb_agg(jsonb_build_object('user', u.username, 'verdict', a.verdict,
                'banner', a.banner, 'position', a.position) ORDER BY a.answered_at, u.username)
            FROM label_answers a JOIN label_users u ON u.id = a.user_id
            WHERE a.image_id = t.image_id AND a.verdict IS NOT NULL), '[]'::jsonb)::text AS answers,
        count(*) OVER () AS total
    FROM label_tasks t
    WHERE ($1 = '' OR strpos(lower(t.image_id), lower($1)) > 0 OR strpos(lower(t.listing_id), lower($1)) > 0)
      AND ($2 = '' OR t.status = $2)
      AND ($3 = '' OR EXISTS (SELECT 1 FROM label_answers a JOIN label_users u ON u.id = a.user_id
                              WHERE a.image_id = t.image_id AND u.username = $3 AND a.verdict IS NOT NULL))
    ORDER BY (t.image_id = $1 OR t.listing_id = $1) DESC, t.created_at DESC, t.image_id
    LIMIT $4
"""


async def find_images(pool: asyncpg.Pool, query: ImageQuery) -> Found:
    """The images that match, exact id or listing matches first, then the newest; with who answered what."""
    if query.state and query.state not in STATES:
        raise ValueError(f"unknown state {query.state!r}")
    rows = await pool.fetch(SEARCH, query.text[:MAX_TEXT_CHARS], query.state, query.labeller, query.limit)
    images = [{**dict(r), "answers": json.loads(r["answers"])} for r in rows]
    return Found(images, rows[0]["total"] if rows else 0)


async def discard_many(pool: asyncpg.Pool, admin_id: int, image_ids: list[str]) -> int:
    """Discard these images (whatever their state, unless discarded already); return how many changed."""
    done = await pool.execute(
        "UPDATE label_tasks SET status = 'discarded', banner = NULL, position = NULL, decided_by = $2, "
        "decided_at = now() WHERE image_id = ANY($1::text[]) AND status <> 'discarded'",
        image_ids[:MAX_DISCARD],
        admin_id,
    )
    return int(done.rsplit(" ", 1)[-1])


async def review_many(pool: asyncpg.Pool, image_ids: list[str]) -> int:
    """Send decided images (final, resolved or discarded) back to the review queue, their label cleared, e.g.
    after the rules changed; the answers stay for the admin to see. Returns how many changed."""
    done = await pool.execute(
        "UPDATE label_tasks SET status = 'review', banner = NULL, position = NULL, decided_by = NULL, "
        "decided_at = now() WHERE image_id = ANY($1::text[]) AND status IN ('final', 'resolved', 'discarded')",
        image_ids[:MAX_DISCARD],
    )
    return int(done.rsplit(" ", 1)[-1])


async def usernames(pool: asyncpg.Pool) -> list[str]:
    return [r["username"] for r in await pool.fetch("SELECT username FROM label_users ORDER BY username")]
