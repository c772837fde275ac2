"""The labelling app over HTTP: sign-in, roles, CSRF, the sign-in limit, escaping, headers, rule versions."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from processor.dev.imageserver import ImageServer
from processor.labelling import sampling

from .labelling_support import (
    PASSWORD,
    LabelDb,
    RunningApp,
    label_app_fixture,  # noqa: F401
    label_db_fixture,  # noqa: F401
)

HOSTILE_LISTING = "<script>alert(1)</script>"
HOSTILE_IMAGE = '"><img src=x onerror=alert(2)>'
HOSTILE_URL = "javascript:alert(3)"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


class Browser:
    """An HTTP client with its own cookie jar, as one person's browser."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.base_url + path, allow_redirects=False) as resp:
            return resp.status, await resp.text(errors="replace"), resp

    async def post(self, path: str, data: dict[str, str], **headers: str) -> tuple[int, str]:
        async with self.http.post(self.base_url + path, data=data, headers=headers, allow_redirects=False) as resp:
            return resp.status, await resp.text()

    async def csrf(self, path: str) -> str:
        status, html, _ = await self.get(path)
        assert status == 200, html
        return csrf_of(html)

    async def sign_in(self, username: str, password: str = PASSWORD) -> int:
        token = await self.csrf("/sign-in")
        status, _ = await self.post("/sign-in", {"username": username, "password": password, "csrf": token})
        return status


@pytest.fixture
async def browsers(label_app: RunningApp) -> AsyncIterator[list[Browser]]:
    made = [Browser(label_app.base_url) for _ in range(3)]
    yield made
    for b in made:
        await b.http.close()


async def test_a_signed_out_visitor_reaches_nothing(label_db: LabelDb, browsers: list[Browser]) -> None:
    visitor = browsers[0]
    await label_db.classify("img", "http://127.0.0.1:9/x.jpg", banner_score=0.5)
    await sampling.fill(label_db.pool, label_db.settings.postgres_table, 10, 0.0, 0.54)
    for path in (
        "/",
        "/label",
        "/guidelines",
        "/admin",
        "/admin/review",
        "/admin/guidelines",
        "/admin/images",
        "/image?id=img",
    ):
        status, _, resp = await visitor.get(path)
        assert (status, resp.headers.get("Location")) == (303, "/sign-in"), path
    token = await visitor.csrf("/sign-in")  # a pre-session token opens no other form
    for path in (
        "/label",
        "/admin/users",
        "/admin/fill",
        "/admin/guidelines",
        "/admin/review",
        "/admin/export",
        "/admin/images/discard",
    ):
        status, _ = await visitor.post(path, {"csrf": token, "username": "eve", "password": "x" * 12})
        assert status == 403, path
    assert await label_db.pool.fetchval("SELECT count(*) FROM label_users") == 0


async def test_a_labeller_cannot_reach_admin_pages(label_db: LabelDb, browsers: list[Browser]) -> None:
    await label_db.user("lab")
    labeller = browsers[0]
    assert await labeller.sign_in("lab") == 303
    token = await labeller.csrf("/guidelines")
    for path in ("/admin", "/admin/review", "/admin/guidelines"):
        status, _, _ = await labeller.get(path)
        assert status == 403, path
    data = {"csrf": token, "username": "mallory", "password": "x" * 12, "role": "admin"}
    assert (await labeller.post("/admin/users", data))[0] == 403
    assert (await labeller.post("/admin/guidelines", {"csrf": token, "body": "anything goes"}))[0] == 403
    assert await label_db.pool.fetchval("SELECT count(*) FROM label_users") == 1
    assert await label_db.pool.fetchval("SELECT count(*) FROM label_guidelines") == 1


async def test_a_post_without_the_csrf_token_is_refused(label_db: LabelDb, browsers: list[Browser]) -> None:
    await label_db.user("boss", "admin")
    admin, other = browsers[0], browsers[1]
    status, _ = await admin.post("/sign-in", {"username": "boss", "password": PASSWORD})  # no token
    assert status == 403
    assert await admin.sign_in("boss") == 303
    token = await admin.csrf("/admin")
    new_user = {"username": "lab", "password": "x" * 12, "role": "labeller"}
    assert (await admin.post("/admin/users", new_user))[0] == 403
    assert (await admin.post("/admin/users", {**new_user, "csrf": "forged"}))[0] == 403
    assert (await admin.post("/admin/users", {**new_user, "csrf": await other.csrf("/sign-in")}))[0] == 403
    origin = {"Origin": "https://evil.example"}
    assert (await admin.post("/admin/users", {**new_user, "csrf": token}, **origin))[0] == 403
    assert await label_db.pool.fetchval("SELECT count(*) FROM label_users") == 1
    assert (await admin.post("/admin/users", {**new_user, "csrf": token}))[0] == 303
    assert await label_db.pool.fetchval("SELECT count(*) FROM label_users") == 2


async def test_the_sign_in_limit_kicks_in(label_db: LabelDb, browsers: list[Browser]) -> None:
    await label_db.user("lab")
    guesser, owner = browsers[0], browsers[1]
    for _ in range(label_db.config.sign_in_attempts):
        assert await guesser.sign_in("lab", "wrong password") == 401
    assert await guesser.sign_in("lab") == 429  # even the right password, until the window passes
    assert await owner.sign_in("LAB") == 429  # the limit is per user name (case-insensitive), not per cookie
    await label_db.user("other")
    assert await owner.sign_in("other") == 303  # other accounts are not locked out


async def test_sessions_end_on_sign_out_and_when_disabled(label_db: LabelDb, browsers: list[Browser]) -> None:
    lab_id = await label_db.user("lab")
    await label_db.user("boss", "admin")
    labeller, admin = browsers[0], browsers[1]
    assert await labeller.sign_in("lab") == 303
    assert (await labeller.get("/guidelines"))[0] == 200
    assert await admin.sign_in("boss") == 303
    token = await admin.csrf("/admin")
    assert (await admin.post("/admin/users/active", {"csrf": token, "user_id": str(lab_id), "active": "no"}))[0] == 303
    assert (await labeller.get("/guidelines"))[0] == 303
    assert await labeller.sign_in("lab") == 401
    await admin.post("/sign-out", {"csrf": token})
    assert (await admin.get("/admin"))[0] == 303


async def test_hostile_ids_and_urls_stay_inert(
    label_db: LabelDb, browsers: list[Browser], image_server: ImageServer
) -> None:
    await label_db.classify(HOSTILE_IMAGE, HOSTILE_URL, banner_score=0.5, listing_id=HOSTILE_LISTING)
    await sampling.fill(label_db.pool, label_db.settings.postgres_table, 10, 0.0, 0.54)
    await label_db.user("lab")
    labeller = browsers[0]
    assert await labeller.sign_in("lab") == 303
    status, html, resp = await labeller.get("/label")
    assert status == 200
    assert HOSTILE_LISTING not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert HOSTILE_IMAGE not in html and "onerror=alert(2)&gt;" in html
    assert "javascript:" not in html  # the source URL is never on the page
    assert 'src="/image?id=%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%282%29%3E"' in html
    status, body, resp = await labeller.get("/image?id=%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%282%29%3E")
    assert status == 502 and "blocked_url" in body and resp.content_type == "text/plain"
    assert sum(image_server.requests.values()) == 0


async def test_every_response_carries_a_strict_policy(label_db: LabelDb, browsers: list[Browser]) -> None:
    visitor = browsers[0]
    for path in ("/sign-in", "/static/app.css", "/label"):
        _, _, resp = await visitor.get(path)
        policy = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy and "'unsafe-inline'" not in policy
        assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["X-Frame-Options"] == "DENY"
    await label_db.user("lab")
    token = await visitor.csrf("/sign-in")
    async with visitor.http.post(
        visitor.base_url + "/sign-in",
        data={"username": "lab", "password": PASSWORD, "csrf": token},
        allow_redirects=False,
    ) as resp:
        cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


async def test_rules_are_versioned_and_every_answer_carries_its_version(
    label_db: LabelDb, browsers: list[Browser]
) -> None:
    await label_db.classify("img", "http://127.0.0.1:9/x.jpg", banner_score=0.5)
    await sampling.fill(label_db.pool, label_db.settings.postgres_table, 10, 0.0, 0.54)
    await label_db.user("boss", "admin")
    await label_db.user("lab")
    admin, labeller = browsers[0], browsers[1]
    assert await admin.sign_in("boss") == 303 and await labeller.sign_in("lab") == 303
    token = await admin.csrf("/admin/guidelines")
    rules = "Rule 1: a <b>price</b> sticker is a banner."
    assert (await admin.post("/admin/guidelines", {"csrf": token, "body": rules}))[0] == 303
    _, html, _ = await labeller.get("/guidelines")
    assert "version 2" in html and "a &lt;b&gt;price&lt;/b&gt; sticker" in html
    _, html, _ = await labeller.get("/label")
    assert 'name="guidelines_version" value="2"' in html
    answer = {"csrf": csrf_of(html), "image_id": "img", "guidelines_version": "2", "verdict": "unsure"}
    assert (await labeller.post("/label", answer))[0] == 303
    assert await label_db.pool.fetchval("SELECT guidelines_version FROM label_answers") == 2
    assert (await labeller.post("/label", {**answer, "guidelines_version": "9"}))[0] == 409  # no such version


@pytest.fixture
async def proxied_app(label_db: LabelDb) -> AsyncIterator[str]:
    """The app as it runs behind one TLS-terminating reverse proxy (PROCESSOR_LABEL_TRUSTED_PROXIES=1)."""
    from aiohttp import web

    from processor.labelling.server import create_app

    app = create_app(label_db.settings, label_db.config.with_overrides(trusted_proxies=1))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_behind_an_https_proxy_forms_work_and_each_client_has_its_own_limit(
    label_db: LabelDb, proxied_app: str
) -> None:
    await label_db.user("lab")
    host = proxied_app.removeprefix("http://")

    async def sign_in(client: str, password: str) -> int:
        proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-For": client, "Origin": f"https://{host}"}
        browser = Browser(proxied_app)
        try:
            token = await browser.csrf("/sign-in")
            status, _ = await browser.post(
                "/sign-in", {"username": "lab", "password": password, "csrf": token}, **proxy
            )
            return status
        finally:
            await browser.http.close()

    assert await sign_in("203.0.113.7", PASSWORD) == 303  # the browser's Origin is https: accepted
    for _ in range(label_db.config.sign_in_attempts):
        assert await sign_in("198.51.100.9", "wrong password") == 401
    assert await sign_in("198.51.100.9", PASSWORD) == 429  # the guesser's address is held back
    assert await sign_in("203.0.113.7", PASSWORD) == 303  # the owner, elsewhere, is not locked out


async def test_without_trusted_proxies_forwarded_headers_change_nothing(
    label_db: LabelDb, browsers: list[Browser]
) -> None:
    await label_db.user("lab")
    token = await browsers[0].csrf("/sign-in")
    host = browsers[0].base_url.removeprefix("http://")
    status, _ = await browsers[0].post(
        "/sign-in",
        {"username": "lab", "password": PASSWORD, "csrf": token},
        **{"X-Forwarded-Proto": "https", "Origin": f"https://{host}"},
    )
    assert status == 403  # an https Origin against an http app, and the header is not believed


async def test_an_unknown_user_name_costs_a_password_check_too(
    label_db: LabelDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    from processor.labelling import accounts
    from processor.labelling.passwords import verify_password

    checked: list[str] = []

    def counting(password: str, stored: str) -> bool:
        checked.append(stored)
        return verify_password(password, stored)

    monkeypatch.setattr(accounts, "verify_password", counting)
    await label_db.user("lab")
    assert await accounts.authenticate(label_db.pool, "lab", "wrong password", "a", 100, 900) is None
    assert await accounts.authenticate(label_db.pool, "nobody", "wrong password", "a", 100, 900) is None
    assert len(checked) == 2  # scrypt ran for the unknown name too, so its answer takes as long
