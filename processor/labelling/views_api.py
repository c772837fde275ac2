"""A JSON interface for batch labelling: claim a page of images, answer them in one request.

For tools that show many photos at once (a grid, a contact sheet) and for scripted import of
answers that people gave elsewhere. It goes through the same queue, consensus and rules as the
one-image page; POST needs the session's CSRF token in the form field ``csrf`` (GET returns it).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from . import guidelines
from .tasks import QueueError, claim_batch, record_answer, undo_last
from .views_label import parse_answer
from .web import CONFIG, POOL, POSITIONS, THRESHOLD, session_of

routes = web.RouteTableDef()
MAX_BATCH = 100


def _int(value: str, default: int, low: int, high: int) -> int:
    return max(low, min(high, int(value))) if value.isdigit() else default


@routes.get("/api/tasks")
async def tasks(request: web.Request) -> web.StreamResponse:
    pool, session = request.app[POOL], session_of(request)
    count = _int(request.query.get("n", ""), 20, 1, MAX_BATCH)
    rules = await guidelines.current(pool)
    claimed = await claim_batch(pool, session.user.id, request.app[CONFIG], count, request.app[THRESHOLD])
    positions: tuple[str, ...] = request.app[POSITIONS]
    body: dict[str, Any] = {
        "guidelines_version": rules.version,
        "positions": list(positions),
        "csrf": session.csrf_token,
        "tasks": [
            {
                "image_id": t.image_id,
                "listing_id": t.listing_id,
                "image": "/image?" + urlencode({"id": t.image_id}),
                # hidden on the random sample and a share of draws, as on the one-image page
                "suggestion": None
                if t.suggestion is None
                else {"banner": t.suggestion[0], "position": t.suggestion[1]},
            }
            for t in claimed
        ],
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


@routes.post("/api/undo")
async def undo(request: web.Request) -> web.StreamResponse:
    """Take back one's latest answer on an image not decided yet: ``{"undone": image_id or null}``."""
    image_id = await undo_last(request.app[POOL], session_of(request).user.id)
    return web.json_response({"undone": image_id}, headers={"Cache-Control": "no-store"})


@routes.post("/api/answers")
async def answers(request: web.Request) -> web.StreamResponse:
    """Form fields ``csrf`` and ``answers``: a JSON list of answers as the one-image page takes them."""
    pool, session = request.app[POOL], session_of(request)
    try:
        items = json.loads(str((await request.post()).get("answers", "")))
    except json.JSONDecodeError:
        items = None
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
        return web.json_response({"error": f"answers must be a JSON list of 1-{MAX_BATCH} objects"}, status=400)
    saved, errors = 0, []
    for item in items:
        if not isinstance(item, dict):
            errors.append({"image_id": None, "error": "not an object"})
            continue
        form = {k: ("yes" if v is True else "no" if v is False else str(v)) for k, v in item.items() if v is not None}
        try:
            answer = parse_answer(form, request.app[POSITIONS])
            if not await guidelines.exists(pool, answer.guidelines_version):
                raise QueueError("unknown version of the rules")
            await record_answer(pool, session.user.id, answer, request.app[CONFIG])
            saved += 1
        except QueueError as exc:
            errors.append({"image_id": form.get("image_id"), "error": str(exc)})
    return web.json_response({"saved": saved, "errors": errors}, status=200 if not errors else 207)
