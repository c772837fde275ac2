"""The labelling rules ("the rules on a document"): versioned text, edited by the admin.

Every answer records the version its labeller was shown, so labels can be traced to the rules of the day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

MAX_CHARS = 50_000
FIRST_VERSION = """\
Answer two questions about each photo.

Banner: answer "yes" when anything was stamped on the photo after it was taken: prices, rates,
phone numbers, dealer names or logos, stickers, frames, watermarks. Writing that is part of the
car or the scene (a number plate, a badge on the car, a shop sign) is not a banner.

Position: what the photo mostly shows. Front and rear are straight on; three-quarter views show
the front (or rear) and one side. Interior is the cabin; dashboard is the driver's view of the
instruments; engine, trunk and detail (a wheel, a light, a seat close up) are what they say.
"Other" is anything that is not a car photo.

Press "unsure" when you cannot tell after a good look; press "skip" when the photo does not load.
"""


@dataclass(frozen=True, slots=True)
class Guidelines:
    """One version of the rules."""

    version: int
    body: str
    created_at: datetime
    author: str | None


async def current(pool: asyncpg.Pool) -> Guidelines:
    """The newest version; the first call writes the built-in first version."""
    row = await _latest(pool)
    if row is None:
        await pool.execute(
            "INSERT INTO label_guidelines (body) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM label_guidelines)",
            FIRST_VERSION,
        )
        row = await _latest(pool)
    assert row is not None
    return Guidelines(row["version"], row["body"], row["created_at"], row["username"])


async def _latest(pool: asyncpg.Pool) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT g.version, g.body, g.created_at, u.username FROM label_guidelines g "
        "LEFT JOIN label_users u ON u.id = g.created_by ORDER BY g.version DESC LIMIT 1"
    )


async def publish(pool: asyncpg.Pool, body: str, author_id: int) -> int:
    """Store a new version; return its number."""
    text = body.replace("\r\n", "\n").replace("\x00", "").strip()
    if not text or len(text) > MAX_CHARS:
        raise ValueError(f"the rules must be 1-{MAX_CHARS} characters")
    version: int = await pool.fetchval(
        "INSERT INTO label_guidelines (body, created_by) VALUES ($1, $2) RETURNING version", text, author_id
    )
    return version


async def exists(pool: asyncpg.Pool, version: int) -> bool:
    return bool(await pool.fetchval("SELECT EXISTS (SELECT 1 FROM label_guidelines WHERE version = $1)", version))
