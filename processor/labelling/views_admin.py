"""The admin's pages: labellers and their agreement, the queue, the review queue, the rules."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from . import guidelines, sampling
from .accounts import ROLES, AccountError, create_user, set_active, set_password
from .tasks import QueueError, agreement, resolve, review_queue, status_counts
from .views_label import position_keys
from .web import CONFIG, POOL, POSITIONS, TABLE, THRESHOLD, error_page, render, session_of

routes = web.RouteTableDef()
MAX_FILL = 10_000
NOTICES = {  # ?done= keys: fixed texts, so nothing from the request is echoed
    "user": "Account created.",
    "active": "Account updated.",
    "fill": "Images added to the queue.",
    "rules": "New version of the rules published.",
    "review": "Decision saved.",
    "password": "Password changed; that user's sessions ended.",
}


def _agreement_rows(rows: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            **dict(r),
            "rate": f"{r['agreed'] / r['decided']:.0%}" if r["decided"] else "-",
            "time": f"{r['median_s']:.1f} s" if r["median_s"] is not None else "-",
        }
        for r in rows
    ]


async def _overview(request: web.Request, status: int = 200, error: str | None = None) -> web.Response:
    pool, config = request.app[POOL], request.app[CONFIG]
    return render(
        request,
        "admin.html",
        status=status,
        error=error,
        notice=NOTICES.get(request.query.get("done", "")),
        counts=await status_counts(pool),
        labellers=_agreement_rows(await agreement(pool)),
        roles=ROLES,
        agree=config.agree,
        max_labellers=config.max_labellers,
        rules=await guidelines.current(pool),
    )


@routes.get("/admin")
async def admin_page(request: web.Request) -> web.StreamResponse:
    return await _overview(request)


@routes.post("/admin/users")
async def add_user(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    role = str(form.get("role", ""))
    try:
        if role not in ROLES:
            raise AccountError("choose a role")
        await create_user(request.app[POOL], str(form.get("username", "")), str(form.get("password", "")), role)
    except AccountError as exc:
        return await _overview(request, 400, f"Not created: {exc}.")
    raise web.HTTPSeeOther("/admin?done=user")


@routes.post("/admin/users/active")
async def toggle_user(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    user_id = str(form.get("user_id", ""))
    if not user_id.isdigit() or int(user_id) == session_of(request).user.id:
        return await _overview(request, 400, "You cannot change that account here.")
    await set_active(request.app[POOL], int(user_id), form.get("active") == "yes")
    raise web.HTTPSeeOther("/admin?done=active")


@routes.post("/admin/users/password")
async def reset_password(request: web.Request) -> web.StreamResponse:
    """A new password for an account (someone who forgot theirs); their sessions end."""
    form = await request.post()
    try:
        await set_password(request.app[POOL], str(form.get("username", "")), str(form.get("password", "")))
    except AccountError as exc:
        return await _overview(request, 400, f"Password not changed: {exc}.")
    raise web.HTTPSeeOther("/admin?done=password")


@routes.post("/admin/fill")
async def fill_queue(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        count = int(str(form.get("count", "")))
        share = float(str(form.get("random_share", "")))
        if not 1 <= count <= MAX_FILL or not 0 <= share <= 1:
            raise ValueError
    except ValueError:
        return await _overview(request, 400, f"Give 1-{MAX_FILL} images and a random share within 0-1.")
    table = request.app[TABLE]
    await sampling.fill(request.app[POOL], table, count, share, request.app[THRESHOLD])
    raise web.HTTPSeeOther("/admin?done=fill")


@routes.get("/admin/review")
async def review_page(request: web.Request) -> web.StreamResponse:
    rows = await review_queue(request.app[POOL])
    items = [{**dict(r), "tally": json.loads(r["tally"]), "answers": json.loads(r["answers"])} for r in rows]
    return render(request, "review.html", items=items, positions=position_keys(request.app[POSITIONS]))


@routes.post("/admin/review")
async def review_decide(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    image_id, action = str(form.get("image_id", "")), form.get("action")
    banner, position = form.get("banner"), form.get("position")
    if action == "discard":
        label = None
    elif action == "decide" and banner in ("yes", "no") and position in request.app[POSITIONS]:
        label = (banner == "yes", str(position))
    else:
        return error_page(request, 400, "Choose banner and position, or discard the image.")
    try:
        await resolve(request.app[POOL], session_of(request).user.id, image_id, label)
    except QueueError as exc:
        return error_page(request, 409, f"Not saved: {exc}.")
    raise web.HTTPSeeOther("/admin/review?done=review")


@routes.get("/admin/guidelines")
async def rules_form(request: web.Request) -> web.StreamResponse:
    return render(request, "admin_guidelines.html", rules=await guidelines.current(request.app[POOL]), error=None)


@routes.post("/admin/guidelines")
async def rules_publish(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    pool = request.app[POOL]
    try:
        await guidelines.publish(pool, str(form.get("body", "")), session_of(request).user.id)
    except ValueError as exc:
        rules = await guidelines.current(pool)
        return render(request, "admin_guidelines.html", status=400, rules=rules, error=str(exc))
    raise web.HTTPSeeOther("/admin?done=rules")
