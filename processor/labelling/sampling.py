"""Active learning: which classified images go into the labelling queue.

Most are the ones the model is least sure of: a banner score close to the threshold, or a
flat position distribution (high entropy of position_scores). A uniform random share is
drawn first, from every image not yet queued, so that labels of that share estimate the
model's accuracy without the bias of the uncertainty sampling. Rows marked ``deleted``
(when the table has that column) are never queued.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ..reclassify import has_deleted_column


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Filled:
    """How many images one fill queued, by reason."""

    random: int
    uncertain: int


def candidates_sql(table: str, deleted_column: bool) -> str:
    """Unqueued rows with their uncertainty in [0, 1] and its reason; $1 is the banner threshold."""
    deleted = "AND c.deleted IS NOT TRUE" if deleted_column else ""
    return f"""
        SELECT c.image_id, c.listing_id, c.url, c.model_version, c.banner_score, c.position,
            1 - abs(c.banner_score - $1) / greatest($1, 1 - $1) AS banner_u,
            coalesce((SELECT -sum(p * ln(p)) FILTER (WHERE p > 0) / nullif(ln(count(*)), 0)
                FROM (SELECT value::float8 AS p FROM jsonb_each_text(c.position_scores)) s), 0) AS position_u
        FROM {_ident(table)} c
        WHERE NOT EXISTS (SELECT 1 FROM label_tasks t WHERE t.image_id = c.image_id)
          AND c.url IS NOT NULL AND c.banner_score IS NOT NULL AND c.position_scores IS NOT NULL {deleted}
    """


def _insert_sql(candidates: str, reason: str, order: str) -> str:
    return f"""
        INSERT INTO label_tasks (image_id, listing_id, url, reason, uncertainty, model_version,
            model_banner_score, model_position)
        SELECT image_id, listing_id, url, {reason}, greatest(banner_u, position_u), model_version,
            banner_score, position
        FROM ({candidates}) k ORDER BY {order} LIMIT $2
        ON CONFLICT (image_id) DO NOTHING
    """


async def fill(pool: asyncpg.Pool, table: str, count: int, random_share: float, threshold: float) -> Filled:
    """Queue up to ``count`` new images: ``random_share`` of them uniformly at random, the rest by uncertainty."""
    if not 0 <= random_share <= 1:
        raise ValueError("random_share must be within [0, 1]")
    n_random = round(count * random_share)
    async with pool.acquire() as conn, conn.transaction():
        candidates = candidates_sql(table, await has_deleted_column(conn, table))
        by_chance = await conn.execute(_insert_sql(candidates, "'random'", "random()"), threshold, n_random)
        reason = "CASE WHEN banner_u >= position_u THEN 'banner' ELSE 'position' END"
        by_doubt = await conn.execute(
            _insert_sql(candidates, reason, "greatest(banner_u, position_u) DESC, image_id"),
            threshold,
            count - n_random,
        )
    return Filled(_inserted(by_chance), _inserted(by_doubt))


def _inserted(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 n"
