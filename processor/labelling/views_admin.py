"""The admin's pages: labellers and their agreement, the queue, the review queue, the rules, the export."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from . import guidelines, sampling
from .accounts import ROLES, AccountError, create_user, set_active, set_password
from .agreement import LabellerConfusion, confusion_by_labeller
from .export import export, zip_export
from .tasks import QueueError, agreement, resolve, review_queue, status_counts
from .views_label import position_keys
from .web import (
    CONFIG,
    EXPORT_LOCK,
    POOL,
    POSITIONS,
    SETTINGS,
    TABLE,
    THRESHOLD,
    error_page,
    render,
    session_of,
)

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


def _cell(agreed: int, total: int) -> dict[str, Any] | None:
    return None if not total else {"agreed": agreed, "total": total, "rate": f"{agreed / total:.0%}"}


def _confusion(found: list[LabellerConfusion], walk: list[str]) -> dict[str, Any]:
    """Per labeller: agreement with the final label per final position (the columns: positions that are some
    image's final label, in walk-around order) and the whole matrix, final position by their answer."""
    order = {p: i for i, p in enumerate(walk)}

    def ordered(positions: set[str]) -> list[str]:
        return sorted(positions, key=lambda p: (order.get(p, len(order)), p))

    finals = ordered({f for c in found for f, _ in c.positions})
    rows = []
    for c in found:
        theirs = ordered({p for pair in c.positions for p in pair})
        rows.append(
            {
                "username": c.username,
                "banner": _cell(*c.banner_agreement()),
                "cells": [_cell(*c.position_agreement(p)) for p in finals],
                "columns": theirs,
                "matrix": [
                    (f, [c.positions.get((f, t), 0) for t in theirs]) for f in ordered({f for f, _ in c.positions})
                ],
            }
        )
    return {"positions": finals, "rows": rows}


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
        confusion=_confusion(await confusion_by_labeller(pool), [p for p, _ in position_keys(request.app[POSITIONS])]),
        holdout_percent=config.holdout_percent,
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


@routes.post("/admin/export")
async def export_download(request: web.Request) -> web.StreamResponse:
    """The export of ``processor label export`` as a zip download: each part's labels.csv and manifest.json, with
    the images if asked. The images are downloaded either way (rows whose image fails are left out)."""
    form = await request.post()
    percent = str(form.get("holdout_percent", ""))
    if not percent.isdigit() or not 0 <= int(percent) <= 100:
        return await _overview(request, 400, "Give a hold-out share of 0-100 %.")
    lock = request.app[EXPORT_LOCK]
    if lock.locked():
        return await _overview(request, 409, "An export is running already: try again when it has finished.")
    async with lock:
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="label-export-"))
        try:
            await export(request.app[POOL], request.app[SETTINGS], folder / "export", int(percent))
            await asyncio.to_thread(zip_export, folder / "export", folder / "labels.zip", form.get("images") == "yes")
            return await _send(request, folder / "labels.zip")
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)


async def _send(request: web.Request, archive: Path) -> web.StreamResponse:
    name = f"labels-{datetime.now(UTC):%Y%m%d-%H%M%S}.zip"
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        }
    )
    response.content_length = (await asyncio.to_thread(archive.stat)).st_size
    await response.prepare(request)
    fh = await asyncio.to_thread(archive.open, "rb")
    try:
        while chunk := await asyncio.to_thread(fh.read, 1 << 20):
            await response.write(chunk)
    finally:
        fh.close()
    await response.write_eof()
    return response
