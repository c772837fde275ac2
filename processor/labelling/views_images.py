"""The admin's search over every queued image, and discarding (or sending back to review) several at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from .search import MAX_DISCARD, MAX_TEXT_CHARS, STATES, ImageQuery, discard_many, find_images, review_many, usernames
from .views_label import MAX_ID_CHARS
from .web import POOL, render, session_of

routes = web.RouteTableDef()
PAGE = 100
DONE = ("discarded", "sent to review")  # what a bulk action did, as the query key that brings back its count


def _query(values: dict[str, str], people: list[str]) -> ImageQuery:
    """The search from the page's fields; anything unknown is left out rather than refused."""
    state = values.get("state", "")
    labeller = values.get("labeller", "")
    return ImageQuery(
        text=values.get("q", "").strip()[:MAX_TEXT_CHARS],
        state=state if state in STATES else "",
        labeller=labeller if labeller in people else "",
        limit=PAGE,
    )


def _back(query: ImageQuery, **extra: str | int) -> str:
    fields = {"q": query.text, "state": query.state, "labeller": query.labeller, **extra}
    return "/admin/images?" + urlencode({k: v for k, v in fields.items() if v != ""})


@routes.get("/admin/images")
async def images_page(request: web.Request) -> web.StreamResponse:
    pool = request.app[POOL]
    people = await usernames(pool)
    query = _query(dict(request.query), people)
    found = await find_images(pool, query)
    notices = [f"{int(n)} image(s) {what}." for what in DONE if (n := request.query.get(what, "")).isdigit()]
    return render(
        request,
        "images.html",
        query=query,
        found=found,
        states=STATES,
        people=people,
        notice=notices[0] if notices else None,
        error=None,
        max_discard=MAX_DISCARD,
    )


@routes.post("/admin/images/discard")
async def discard(request: web.Request) -> web.StreamResponse:
    """Discard the ticked images; back to the same search."""
    admin_id = session_of(request).user.id
    return await _bulk(request, "discarded", lambda pool, ids: discard_many(pool, admin_id, ids))


@routes.post("/admin/images/review")
async def send_to_review(request: web.Request) -> web.StreamResponse:
    """Send the ticked decided images back to the review queue (a label given under old rules); back to the search."""
    return await _bulk(request, "sent to review", review_many)


async def _bulk(
    request: web.Request, what: str, apply: Callable[[asyncpg.Pool, list[str]], Awaitable[int]]
) -> web.StreamResponse:
    """Apply a bulk action to the ticked images and go back to the same search with how many changed."""
    pool = request.app[POOL]
    form = await request.post()
    query = _query({k: str(form.get(k, "")) for k in ("q", "state", "labeller")}, await usernames(pool))
    chosen = [v for v in form.getall("image_id", []) if isinstance(v, str) and 0 < len(v) <= MAX_ID_CHARS]
    if not chosen or len(chosen) > MAX_DISCARD:
        found = await find_images(pool, query)
        return render(
            request,
            "images.html",
            status=400,
            query=query,
            found=found,
            states=STATES,
            people=await usernames(pool),
            notice=None,
            error=f"Tick 1-{MAX_DISCARD} images.",
            max_discard=MAX_DISCARD,
        )
    raise web.HTTPSeeOther(_back(query, **{what: await apply(pool, chosen)}))
