"""The labelling queue in Postgres: hand out images, record answers, decide, and the admin's review.

An image shown to someone gets a row in ``label_answers`` at once (verdict NULL), so a
person is never shown the same image twice (the primary key), and a shown image holds one
of the N slots for ``assignment_ttl_s`` while it waits for the answer. Undoing an answer
turns it back into such a row (and the image back to open if it waited in review): it no
longer counts, and the image comes back to that person first.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from .config import LabelConfig
from .consensus import Outcome, Verdict, Vote, decide


class QueueError(ValueError):
    """A refused answer or decision; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class Task:
    """An image to label."""

    image_id: str
    listing_id: str
    url: str
    model_banner_score: float | None
    model_position: str | None
    suggestion: tuple[bool, str] | None = None  # (banner, position) the model suggests, when shown on this draw


@dataclass(frozen=True, slots=True)
class Answer:
    """What a labeller submitted for an image."""

    image_id: str
    verdict: Verdict
    banner: bool | None
    position: str | None
    guidelines_version: int


TASK_COLUMNS = "t.image_id, t.listing_id, t.url, t.model_banner_score, t.model_position"

CLAIM = f"""
    SELECT {TASK_COLUMNS} FROM label_tasks t
    WHERE t.status = 'open'
      AND NOT EXISTS (SELECT 1 FROM label_answers a WHERE a.image_id = t.image_id AND a.user_id = $1)
      AND t.votes + (SELECT count(*) FROM label_answers a WHERE a.image_id = t.image_id AND a.verdict IS NULL
                     AND a.shown_at > now() - make_interval(secs => $2)) < coalesce(t.max_labellers, $3)
    ORDER BY t.votes DESC, t.created_at, md5(t.image_id)
    LIMIT 1 FOR UPDATE SKIP LOCKED
"""


# A new draw: the model's suggestion is hidden on the random sample (its labels measure the model unaided) and
# on a share of the rest (agreement with and without it shows how far it pulls the answers).
SHOW = """
    INSERT INTO label_answers (image_id, user_id, suggestion_shown, suggested_banner, suggested_position)
    SELECT t.image_id, $2, CASE WHEN t.model_position IS NULL OR t.model_banner_score IS NULL THEN NULL
            WHEN t.reason = 'random' THEN false ELSE random() >= $3 END,
        t.model_banner_score >= $4, t.model_position
    FROM label_tasks t WHERE t.image_id = $1
    RETURNING suggestion_shown, suggested_banner, suggested_position
"""
PENDING = f"""
    SELECT {TASK_COLUMNS}, a.suggestion_shown, a.suggested_banner, a.suggested_position
    FROM label_answers a JOIN label_tasks t USING (image_id)
    WHERE a.user_id = $1 AND a.verdict IS NULL AND t.status = 'open'
"""


def _task(row: asyncpg.Record, shown: asyncpg.Record | None = None) -> Task:
    drawn = row if shown is None else shown
    suggestion = (drawn["suggested_banner"], drawn["suggested_position"]) if drawn["suggestion_shown"] else None
    return Task(
        row["image_id"], row["listing_id"], row["url"], row["model_banner_score"], row["model_position"], suggestion
    )


async def _show(
    conn: asyncpg.Connection, row: asyncpg.Record, user_id: int, config: LabelConfig, threshold: float
) -> Task:
    shown = await conn.fetchrow(SHOW, row["image_id"], user_id, config.suggestion_hidden_share, threshold)
    return _task(row, shown)


async def next_task(pool: asyncpg.Pool, user_id: int, config: LabelConfig, threshold: float = 0.5) -> Task | None:
    """The image this person should label now: the one shown and not yet answered (the latest: an undone
    answer's image comes back at once), else a new one."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(PENDING + " ORDER BY a.shown_at DESC LIMIT 1", user_id)
        if row is not None:
            return _task(row)
        row = await conn.fetchrow(CLAIM, user_id, float(config.assignment_ttl_s), config.max_labellers)
        return None if row is None else await _show(conn, row, user_id, config, threshold)


async def claim_batch(
    pool: asyncpg.Pool, user_id: int, config: LabelConfig, count: int, threshold: float = 0.5
) -> list[Task]:
    """Up to ``count`` images for this person: those shown and not yet answered first, then new ones."""
    async with pool.acquire() as conn, conn.transaction():
        tasks = [_task(r) for r in await conn.fetch(PENDING + " ORDER BY a.shown_at LIMIT $2", user_id, count)]
        while len(tasks) < count:
            row = await conn.fetchrow(CLAIM, user_id, float(config.assignment_ttl_s), config.max_labellers)
            if row is None:
                break
            tasks.append(await _show(conn, row, user_id, config, threshold))
    return tasks


async def shown_suggestion(pool: asyncpg.Pool, user_id: int, image_id: str) -> tuple[bool, str] | None:
    """The suggestion this person was shown with an image waiting for their answer, if any (to accept it)."""
    row = await pool.fetchrow(
        "SELECT suggested_banner, suggested_position FROM label_answers WHERE image_id = $1 AND user_id = $2 "
        "AND verdict IS NULL AND suggestion_shown",
        image_id,
        user_id,
    )
    return None if row is None else (row["suggested_banner"], row["suggested_position"])


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a labeller stands: answers given (all time, today) and images still open to them."""

    answered: int
    answered_today: int
    open_to_me: int


async def progress(pool: asyncpg.Pool, user_id: int, config: LabelConfig) -> Progress:
    row = await pool.fetchrow(
        """SELECT
            (SELECT count(*) FROM label_answers WHERE user_id = $1 AND verdict IS NOT NULL) AS answered,
            (SELECT count(*) FROM label_answers WHERE user_id = $1 AND verdict IS NOT NULL
                AND answered_at >= date_trunc('day', now())) AS today,
            (SELECT count(*) FROM label_tasks t WHERE t.status = 'open'
                AND t.votes < coalesce(t.max_labellers, $2)
                AND NOT EXISTS (SELECT 1 FROM label_answers a WHERE a.image_id = t.image_id AND a.user_id = $1
                                AND a.verdict IS NOT NULL)) AS open_to_me""",
        user_id,
        config.max_labellers,
    )
    assert row is not None
    return Progress(row["answered"], row["today"], row["open_to_me"])


async def task_url(pool: asyncpg.Pool, image_id: str, table: str | None = None) -> str | None:
    """The source URL of a queued image (the app fetches it; the page never sees it as a link), or with
    ``table`` (the classification table) of another photo of a listing in the queue."""
    url: str | None = await pool.fetchval("SELECT url FROM label_tasks WHERE image_id = $1", image_id)
    if url is None and table is not None:
        try:
            url = await pool.fetchval(
                f"SELECT c.url FROM {_ident(table)} c WHERE c.image_id = $1 AND c.deleted IS NOT TRUE "
                "AND EXISTS (SELECT 1 FROM label_tasks t WHERE t.listing_id = c.listing_id)",
                image_id,
            )
        except asyncpg.UndefinedTableError:  # an app fed by imports alone
            return None
    return url


@dataclass(frozen=True, slots=True)
class ListingPhoto:
    """A photo of the listing an image belongs to, in the listing's order."""

    image_id: str
    position_index: int | None


async def listing_photos(pool: asyncpg.Pool, listing_id: str, table: str, limit: int = 40) -> list[ListingPhoto]:
    """The listing's photos (classified or queued), in its order: the context of the image being labelled."""
    queued = "SELECT image_id, NULL::int AS position_index FROM label_tasks WHERE listing_id = $1"
    classified = (
        f"SELECT image_id, position_index FROM {_ident(table)} "
        "WHERE listing_id = $1 AND url IS NOT NULL AND deleted IS NOT TRUE"
    )
    query = "SELECT image_id, min(position_index) AS position_index FROM ({}) x GROUP BY image_id "
    query += "ORDER BY min(position_index) NULLS LAST, image_id LIMIT $2"
    try:
        rows = await pool.fetch(query.format(f"{classified} UNION ALL {queued}"), listing_id, limit)
    except asyncpg.UndefinedTableError:
        rows = await pool.fetch(query.format(queued), listing_id, limit)
    return [ListingPhoto(r["image_id"], r["position_index"]) for r in rows]


async def peek_next(pool: asyncpg.Pool, user_id: int, current: str, config: LabelConfig) -> str | None:
    """The image this person will most likely get after ``current`` (to fetch it ahead); claims nothing."""
    image_id: str | None = await pool.fetchval(
        f"""SELECT image_id FROM ({CLAIM.replace("LIMIT 1 FOR UPDATE SKIP LOCKED", "LIMIT 2")}) x
        WHERE image_id <> $4 LIMIT 1""",
        user_id,
        float(config.assignment_ttl_s),
        config.max_labellers,
        current,
    )
    return image_id


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def record_answer(pool: asyncpg.Pool, user_id: int, answer: Answer, config: LabelConfig) -> Outcome:
    """Store an answer to an image this person was shown, and decide the image if it is still open."""
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.fetchval("SELECT status FROM label_tasks WHERE image_id = $1 FOR UPDATE", answer.image_id)
        updated = await conn.execute(
            "UPDATE label_answers SET verdict = $3, banner = $4, position = $5, guidelines_version = $6, "
            "answered_at = now() WHERE image_id = $1 AND user_id = $2 AND verdict IS NULL",
            answer.image_id,
            user_id,
            answer.verdict,
            answer.banner,
            answer.position,
            answer.guidelines_version,
        )
        if status is None or updated.endswith(" 0"):
            raise QueueError("that image was not waiting for your answer")
        column = "skips" if answer.verdict == "skip" else "votes"
        await conn.execute(f"UPDATE label_tasks SET {column} = {column} + 1 WHERE image_id = $1", answer.image_id)
        if status != "open":  # decided while this person looked: the answer still counts for agreement
            return Outcome("open")
        return await _decide(conn, answer.image_id, config)


UNDOABLE = "('open', 'review')"  # statuses before a decision: consensus or the admin's makes an answer final


async def undo_last(pool: asyncpg.Pool, user_id: int) -> str | None:
    """Take back this person's latest answer on an image not decided yet; return the image's id, or None
    when there is nothing to take back. The answer stops counting, the image (back to open if it waited in
    review) is shown to them again next, and a repeated undo takes back the answer before."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT a.image_id, a.verdict FROM label_answers a JOIN label_tasks t USING (image_id) "
            f"WHERE a.user_id = $1 AND a.verdict IS NOT NULL AND t.status IN {UNDOABLE} "
            "ORDER BY a.answered_at DESC LIMIT 1 FOR UPDATE OF t, a",
            user_id,
        )
        if row is None:
            return None
        column = "skips" if row["verdict"] == "skip" else "votes"
        await conn.execute(
            f"UPDATE label_tasks SET {column} = greatest({column} - 1, 0), status = 'open', banner = NULL, "
            "position = NULL, decided_at = NULL WHERE image_id = $1",
            row["image_id"],
        )
        await conn.execute(
            "UPDATE label_answers SET verdict = NULL, banner = NULL, position = NULL, guidelines_version = NULL, "
            "answered_at = NULL, shown_at = now() WHERE image_id = $1 AND user_id = $2",
            row["image_id"],
            user_id,
        )
    image_id: str = row["image_id"]
    return image_id


async def can_undo(pool: asyncpg.Pool, user_id: int) -> bool:
    """Whether this person has an answer they can still take back."""
    found = await pool.fetchval(
        "SELECT 1 FROM label_answers a JOIN label_tasks t USING (image_id) "
        f"WHERE a.user_id = $1 AND a.verdict IS NOT NULL AND t.status IN {UNDOABLE} LIMIT 1",
        user_id,
    )
    return found is not None


async def _decide(conn: asyncpg.Connection, image_id: str, config: LabelConfig) -> Outcome:
    rows = await conn.fetch(
        "SELECT verdict, banner, position FROM label_answers WHERE image_id = $1 AND verdict IS NOT NULL", image_id
    )
    task = await conn.fetchrow("SELECT agree, max_labellers FROM label_tasks WHERE image_id = $1", image_id)
    agree = task["agree"] if task is not None and task["agree"] is not None else config.agree
    most = task["max_labellers"] if task is not None and task["max_labellers"] is not None else config.max_labellers
    available = await conn.fetchval(
        "SELECT count(*) FROM label_users u WHERE u.active AND NOT EXISTS "
        "(SELECT 1 FROM label_answers a WHERE a.image_id = $1 AND a.user_id = u.id AND a.verdict IS NOT NULL)",
        image_id,
    )
    outcome = decide([Vote(r["verdict"], r["banner"], r["position"]) for r in rows], agree, most, available)
    if outcome.status != "open":
        banner, position = outcome.label if outcome.label is not None else (None, None)
        await conn.execute(
            "UPDATE label_tasks SET status = $2, banner = $3, position = $4, decided_at = now() WHERE image_id = $1",
            image_id,
            outcome.status,
            banner,
            position,
        )
    return outcome


async def redecide(pool: asyncpg.Pool, config: LabelConfig) -> dict[str, int]:
    """Decide every open image again (after K, N or the team changed); return how many moved where."""
    moved = {"final": 0, "review": 0}
    for image_id in [r["image_id"] for r in await pool.fetch("SELECT image_id FROM label_tasks WHERE status = 'open'")]:
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT status FROM label_tasks WHERE image_id = $1 FOR UPDATE", image_id) != "open":
                continue
            if not await conn.fetchval("SELECT votes + skips FROM label_tasks WHERE image_id = $1", image_id):
                continue  # nobody answered yet: nothing to decide
            outcome = await _decide(conn, image_id, config)
            if outcome.status != "open":
                moved[outcome.status] += 1
    return moved


async def review_queue(pool: asyncpg.Pool, limit: int = 20) -> list[asyncpg.Record]:
    """Images the labellers could not agree on, oldest first, with their answers tallied and by labeller."""
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""SELECT {TASK_COLUMNS}, t.votes, t.skips,
            coalesce((SELECT jsonb_agg(jsonb_build_object('user', u.username, 'verdict', a.verdict,
                'banner', a.banner, 'position', a.position) ORDER BY a.answered_at, u.username)
              FROM label_answers a JOIN label_users u ON u.id = a.user_id
              WHERE a.image_id = t.image_id AND a.verdict IS NOT NULL), '[]'::jsonb)::text AS answers,
            coalesce((SELECT jsonb_agg(jsonb_build_object('verdict', x.verdict, 'banner', x.banner,
                'position', x.position, 'n', x.n) ORDER BY x.n DESC)
              FROM (SELECT verdict, banner, position, count(*) AS n FROM label_answers a
                    WHERE a.image_id = t.image_id AND a.verdict IS NOT NULL
                    GROUP BY verdict, banner, position) x), '[]'::jsonb)::text AS tally
        FROM label_tasks t WHERE t.status = 'review' ORDER BY t.decided_at, t.image_id LIMIT $1""",
        limit,
    )
    return rows


async def resolve(pool: asyncpg.Pool, admin_id: int, image_id: str, label: tuple[bool, str] | None) -> None:
    """The admin's decision on a reviewed image: a label, or None to discard the image."""
    banner, position = label if label is not None else (None, None)
    status = "resolved" if label is not None else "discarded"
    done = await pool.execute(
        "UPDATE label_tasks SET status = $2, banner = $3, position = $4, decided_by = $5, decided_at = now() "
        "WHERE image_id = $1 AND status = 'review'",
        image_id,
        status,
        banner,
        position,
        admin_id,
    )
    if done.endswith(" 0"):
        raise QueueError("that image is not in the review queue")


async def status_counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT status, count(*) AS n FROM label_tasks GROUP BY status")
    counts = dict.fromkeys(("open", "final", "review", "resolved", "discarded"), 0)
    counts.update({r["status"]: r["n"] for r in rows})
    return counts


async def agreement(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Per labeller: answers by kind, how often their label matched the final one (consensus or admin), and
    the median seconds from an image's showing to their answer."""
    rows: list[asyncpg.Record] = await pool.fetch("""
        SELECT u.id, u.username, u.role, u.active,
            count(a.verdict) AS answers,
            count(*) FILTER (WHERE a.verdict = 'unsure') AS unsure,
            count(*) FILTER (WHERE a.verdict = 'skip') AS skipped,
            count(*) FILTER (WHERE a.verdict = 'label' AND t.status IN ('final', 'resolved')) AS decided,
            count(*) FILTER (WHERE a.verdict = 'label' AND t.status IN ('final', 'resolved')
                             AND a.banner = t.banner AND a.position = t.position) AS agreed,
            percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.answered_at - a.shown_at))
                FILTER (WHERE a.verdict IS NOT NULL) AS median_s
        FROM label_users u
        LEFT JOIN label_answers a ON a.user_id = u.id
        LEFT JOIN label_tasks t ON t.image_id = a.image_id
        GROUP BY u.id ORDER BY u.username""")
    return rows
