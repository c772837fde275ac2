"""The labeller's pages: one image at a time, its answer, the image itself, and the rules."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
from aiohttp import web

from ..errors import ProcessorError
from . import guidelines
from .consensus import VERDICTS, Verdict
from .tasks import (
    Answer,
    QueueError,
    can_undo,
    listing_photos,
    next_task,
    peek_next,
    progress,
    record_answer,
    shown_suggestion,
    task_url,
    undo_last,
)
from .web import CONFIG, IMAGES, POOL, POSITIONS, TABLE, THRESHOLD, error_page, render, session_of

routes = web.RouteTableDef()
MAX_ID_CHARS = 1000
# Keyboard shortcuts: y / n answer "banner?", these keys pick positions in order; u unsure, s skip, a accepts
# the model's suggestion, f shows the photo at full size, l the listing's other photos, Backspace undoes.
POSITION_KEYS = "1234567890qwertiopdghjkxcvm"
ACCEPT = "accept"  # the verdict of the suggestion's button: the server fills in what was suggested


# Positions in the order a labeller walks round a car and then into it; a model's other labels follow.
WALK_AROUND = (
    "front", "front_three_quarter", "side", "rear_three_quarter", "rear",
    "interior", "dashboard", "engine", "trunk", "detail", "other",
)  # fmt: skip


def position_keys(positions: tuple[str, ...]) -> list[tuple[str, str]]:
    """(position, key) pairs in walk-around order (1 front, 2 front three-quarter, ...); positions beyond the
    keys get none."""
    ordered = sorted(positions, key=lambda p: WALK_AROUND.index(p) if p in WALK_AROUND else len(WALK_AROUND))
    return [(p, POSITION_KEYS[i] if i < len(POSITION_KEYS) else "") for i, p in enumerate(ordered)]


@routes.get("/label")
async def label_page(request: web.Request) -> web.StreamResponse:
    pool, session = request.app[POOL], session_of(request)
    rules = await guidelines.current(pool)
    task = await next_task(pool, session.user.id, request.app[CONFIG], request.app[THRESHOLD])
    undo = await can_undo(pool, session.user.id)
    if task is None:
        return render(request, "done.html", guidelines_version=rules.version, can_undo=undo)
    return render(
        request,
        "label.html",
        task=task,
        positions=position_keys(request.app[POSITIONS]),
        guidelines_version=rules.version,
        progress=await progress(pool, session.user.id, request.app[CONFIG]),
        can_undo=undo,
        listing=await listing_photos(pool, task.listing_id, request.app[TABLE]),
        next_image=await peek_next(pool, session.user.id, task.image_id, request.app[CONFIG]),
    )


def parse_answer(form: Mapping[str, object], positions: tuple[str, ...]) -> Answer:
    """The submitted answer; raise QueueError for anything malformed."""
    image_id, verdict = form.get("image_id"), form.get("verdict")
    version = str(form.get("guidelines_version", ""))
    if not isinstance(image_id, str) or not 0 < len(image_id) <= MAX_ID_CHARS or verdict not in VERDICTS:
        raise QueueError("incomplete answer")
    if not version.isdigit():
        raise QueueError("the page did not say which rules it showed")
    chosen: Verdict = verdict  # narrowed by the check against VERDICTS
    if chosen != "label":
        return Answer(image_id, chosen, None, None, int(version))
    banner, position = form.get("banner"), form.get("position")
    if banner not in ("yes", "no") or position not in positions:
        raise QueueError("answer both questions, or press unsure or skip")
    return Answer(image_id, chosen, banner == "yes", str(position), int(version))


async def accepted(
    pool: asyncpg.Pool, user_id: int, form: Mapping[str, object], positions: tuple[str, ...]
) -> dict[str, object]:
    """The form of an accepted suggestion: the labels this person was shown, taken from the database."""
    image_id = form.get("image_id")
    suggestion = await shown_suggestion(pool, user_id, image_id) if isinstance(image_id, str) else None
    if suggestion is None or suggestion[1] not in positions:
        raise QueueError("no suggestion was shown with that image")
    banner, position = suggestion
    return {**form, "verdict": "label", "banner": "yes" if banner else "no", "position": position}


@routes.post("/label")
async def label_answer(request: web.Request) -> web.StreamResponse:
    pool, session = request.app[POOL], session_of(request)
    try:
        form: Mapping[str, object] = await request.post()
        if form.get("verdict") == ACCEPT:
            form = await accepted(pool, session.user.id, form, request.app[POSITIONS])
        answer = parse_answer(form, request.app[POSITIONS])
        if not await guidelines.exists(pool, answer.guidelines_version):
            raise QueueError("unknown version of the rules")
        await record_answer(pool, session.user.id, answer, request.app[CONFIG])
    except QueueError as exc:
        return error_page(request, 409, f"Not saved: {exc}.")
    raise web.HTTPSeeOther("/label")


@routes.post("/label/undo")
async def label_undo(request: web.Request) -> web.StreamResponse:
    """Take back one's latest answer on an image not decided yet; its image is shown again next."""
    if await undo_last(request.app[POOL], session_of(request).user.id) is None:
        return error_page(request, 409, "Nothing to undo: your answers so far are part of decided labels.")
    raise web.HTTPSeeOther("/label")


@routes.get("/image")
async def image(request: web.Request) -> web.StreamResponse:
    """A queued image (or another photo of its listing), fetched by the app and re-encoded (``full=1``: at
    full resolution, for the zoom); the id selects it, the URL never comes from the page."""
    url = await task_url(request.app[POOL], request.query.get("id", ""), request.app[TABLE])
    if url is None:
        return web.Response(status=404, text="no such image")
    try:
        body = await request.app[IMAGES].display(url, full=request.query.get("full") == "1")
    except ProcessorError as exc:
        return web.Response(status=502, text=f"the image could not be shown ({exc.kind})")
    return web.Response(body=body, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@routes.get("/guidelines")
async def guidelines_page(request: web.Request) -> web.StreamResponse:
    return render(request, "guidelines.html", rules=await guidelines.current(request.app[POOL]))
