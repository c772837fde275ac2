"""The labelling app's frame: application state, security headers, sessions, CSRF, page rendering.

Every page needs a session except ``/sign-in`` and ``/static/``; everything under ``/admin`` needs
the admin role. Every request that is not GET or HEAD must carry the form field ``csrf``: the
session's token, or before sign-in the token of the ``label_csrf`` cookie (double submit); a
foreign ``Origin`` is refused too. Cookies are HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import jinja2
from aiohttp import web

from ..settings import Settings
from .accounts import Session, find_session
from .config import LabelConfig
from .images import ImageProxy

POOL = web.AppKey("pool", asyncpg.Pool)
CONFIG = web.AppKey("config", LabelConfig)
IMAGES = web.AppKey("images", ImageProxy)
POSITIONS = web.AppKey("positions", tuple)
THRESHOLD = web.AppKey("threshold", float)
TABLE = web.AppKey("table", str)  # the classification table the queue is filled from
TEMPLATES = web.AppKey("templates", jinja2.Environment)
SETTINGS = web.AppKey("settings", Settings)  # the pipeline's settings: where images come from, for exports
EXPORT_LOCK = web.AppKey("export_lock", asyncio.Lock)  # one export from the admin page at a time
SESSION = web.RequestKey[Session | None]("session")
PRE_CSRF = web.RequestKey("pre_csrf", str)  # the sign-in form's token

SESSION_COOKIE = "label_session"
CSRF_COOKIE = "label_csrf"
PUBLIC_PATHS = frozenset({"/sign-in"})
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send "Origin: null" on our own forms
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def templates() -> jinja2.Environment:
    """Templates with autoescaping on for every file and undefined names as errors."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("processor.labelling", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


async def security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the same headers on every response, errors and static files included."""
    response.headers.update(HEADERS)
    response.headers["Server"] = "labelling"  # instead of the library and Python versions
    if response.content_type == "text/html":
        response.headers["Cache-Control"] = "no-store"


def session_of(request: web.Request) -> Session:
    """The signed-in session (the auth middleware guarantees one on non-public routes)."""
    session = request[SESSION]
    assert session is not None, "a public route asked for the session"
    return session


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """A page; every template gets ``user`` and ``csrf``."""
    session = request.get(SESSION)
    csrf = session.csrf_token if session is not None else request.get(PRE_CSRF, "")
    page = request.app[TEMPLATES].get_template(template)
    body = page.render(user=session.user if session else None, csrf=csrf, **context)
    return web.Response(text=body, status=status, content_type="text/html")


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "error.html", status=status, status_code=status, message=message)


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/static/")


def _foreign_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is not None and origin != f"{request.scheme}://{request.host}"


async def _csrf_ok(request: web.Request, session: Session | None) -> bool:
    expected = session.csrf_token if session is not None else request.cookies.get(CSRF_COOKIE, "")
    sent = (await request.post()).get("csrf")
    return bool(expected) and isinstance(sent, str) and hmac.compare_digest(sent.encode(), expected.encode())


@web.middleware
async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Behind ``trusted_proxies`` reverse proxies: the scheme and client address they saw, not their own.

    The Origin check then compares with https behind a TLS-terminating proxy, and the sign-in limit counts
    the client's address instead of the proxy's. Without trusted proxies the headers are ignored (anyone
    could send them).
    """
    hops = request.app[CONFIG].trusted_proxies
    if hops:
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
        chain = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
        request = request.clone(
            scheme=proto if proto in ("http", "https") else request.scheme,
            remote=chain[-hops] if len(chain) >= hops else request.remote or "",
        )
    return await handler(request)


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Load the session; keep out the signed-out, non-admins from /admin, and requests without CSRF token."""
    token = request.cookies.get(SESSION_COOKIE)
    session = await find_session(request.app[POOL], token) if token else None
    request[SESSION] = session
    if session is None and not _public(request.path):
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther("/sign-in")
        return error_page(request, 403, "Sign in first.")
    if session is not None and request.path.startswith("/admin") and not session.user.is_admin:
        return error_page(request, 403, "This page is for admins.")
    if request.method not in ("GET", "HEAD") and (_foreign_origin(request) or not await _csrf_ok(request, session)):
        return error_page(request, 403, "The form was stale or came from elsewhere: reload the page and try again.")
    return await handler(request)


def pre_session_token(request: web.Request) -> str:
    """The sign-in form's CSRF token: the cookie's, or a new one that ``set_pre_session_cookie`` stores."""
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    request[PRE_CSRF] = token
    return token


def set_cookie(response: web.StreamResponse, config: LabelConfig, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="Strict", secure=config.cookie_secure
    )
