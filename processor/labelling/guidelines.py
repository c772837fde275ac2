"""The labelling rules ("the rules on a document"): versioned text, edited by the admin.

Every answer records the version its labeller was shown, so labels can be traced to the rules of the day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

MAX_CHARS = 50_000
FIRST_VERSION = """\
Answer two questions about each photo: is there a banner, and what does the photo show.

BANNER: "yes" for any overlay a dealer or a site added to the photo, however small: price or
finance banners, contact strips, phone numbers, dealer names or logos (a small corner logo
counts), watermarks (even faint ones), stickers, frames, "sold" stamps, and stamps a camera or
phone printed on the photo (a date, "shot on ..."). Not a banner: writing
that is part of the scene (number plates, badges on the car, a shop sign, a sticker on the
car's own window that was there when the photo was taken).

POSITION: what the photo mostly shows.
- front: the car head-on, bumper and grille centred, within about 20 degrees of straight ahead.
- front_three_quarter: the front and one side both clearly visible (about 20-70 degrees).
- side: the profile (about 70-110 degrees).
- rear_three_quarter: the rear and one side (about 110-160 degrees).
- rear: the tail head-on.
- interior: the cabin: seats, door cards, headliner, rear bench, a cabin overview from a door
  or from the back seat where the seats dominate.
- dashboard: the front of the cabin as the subject: steering wheel, instrument cluster, centre
  screen or console, gear lever; also the dash seen from the back seat.
- engine: the engine bay with the bonnet open, or an engine close-up.
- trunk: the open boot or load space, including a pickup's bed and a van's cargo area seen
  from its open doors.
- detail: a close-up of one exterior part: wheel, tyre, headlight, badge, mirror, damage.
- other: no car as the subject: documents, keys, people, buildings, screenshots.

Settled cases: a seat close-up is interior; a gear lever or a screen close-up is dashboard; a
wheel is detail, never side; a whole car with a dent is its angle, a close-up of the dent (or
of part of the body: a door, a bumper corner) is detail; a cropped car whose most is visible
takes its viewing angle; a showroom with many cars and no single subject is other; a photo of
a car on a screen or a brochure is other; a motorcycle, a bus or a truck cab is other.
From an open front door: dashboard when the steering wheel and the dash fill most of the
photo, interior when the seats do. A number plate swapped for a dealer's logo plate in the
photo is a banner, and so is a show plate with the dealer's or the model's name; a number plate
whose characters were blurred, pixelated or retouched away (it still looks like a plate) is not,
a box, bar or brush stroke drawn over it is. Letters on a showroom wall are part of the scene;
the same logo added in a corner of the photo is a banner. A head-on photo with the bonnet open
and the engine bay as the subject is engine. A light pickup or a box-bodied light truck is a
car and takes its angle; a cargo truck is other. A view out through the windscreen with no
part of the car as the subject, and "photo not available" placeholders: unsure (the admin
discards them).

Press "unsure" when you cannot tell after a good look (it goes to the admin); press "skip"
when the photo does not load.
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
