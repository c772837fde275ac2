"""Signing in and out."""

from __future__ import annotations

from aiohttp import web

from .accounts import Throttled, authenticate, end_session, start_session
from .web import (
    CONFIG,
    CSRF_COOKIE,
    POOL,
    SESSION,
    SESSION_COOKIE,
    error_page,
    pre_session_token,
    render,
    session_of,
    set_cookie,
)

routes = web.RouteTableDef()
PRE_SESSION_TTL_S = 3600


@routes.get("/")
async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/admin" if session_of(request).user.is_admin else "/label")


@routes.get("/sign-in")
async def sign_in_form(request: web.Request) -> web.StreamResponse:
    if request[SESSION] is not None:
        raise web.HTTPSeeOther("/")
    token = pre_session_token(request)
    response = render(request, "sign_in.html", error=None)
    set_cookie(response, request.app[CONFIG], CSRF_COOKIE, token, PRE_SESSION_TTL_S)
    return response


@routes.post("/sign-in")
async def sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    config = request.app[CONFIG]
    pre_session_token(request)
    try:
        user = await authenticate(
            request.app[POOL],
            username,
            password,
            request.remote or "",
            config.sign_in_attempts,
            config.sign_in_window_s,
        )
    except Throttled:
        return error_page(request, 429, "Too many failed sign-ins: wait a while, or ask an admin.")
    if user is None:
        return render(request, "sign_in.html", status=401, error="Wrong user name or password.")
    token = await start_session(request.app[POOL], user, config.session_ttl_s)
    response = web.HTTPSeeOther("/")
    set_cookie(response, config, SESSION_COOKIE, token, config.session_ttl_s)
    response.del_cookie(CSRF_COOKIE, path="/")
    raise response


@routes.post("/sign-out")
async def sign_out(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await end_session(request.app[POOL], token)
    response = web.HTTPSeeOther("/sign-in")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response
