"""Labeller and admin accounts, server-side sessions (with their CSRF token) and the sign-in rate limit."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

import asyncpg

from .passwords import check_strength, dummy_hash, hash_password, verify_password

Role = Literal["admin", "labeller"]
ROLES: tuple[Role, ...] = ("admin", "labeller")
USERNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
MAX_USERNAME = 64
ADDRESS_FACTOR = 4  # one address may fail this many times more often than one user name


class AccountError(ValueError):
    """A refused account change; the message is safe to show."""


class Throttled(Exception):
    """Too many failed sign-ins for this user name or address."""


@dataclass(frozen=True, slots=True)
class User:
    """A signed-in person."""

    id: int
    username: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: who, and the token its forms must carry."""

    user: User
    csrf_token: str


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()  # the table never holds a usable token


def normalize_username(username: str) -> str:
    """Lower-cased; raise AccountError unless it is 1-64 of [a-z0-9._-]."""
    name = username.strip().lower()
    if not name or len(name) > MAX_USERNAME or not set(name) <= USERNAME_CHARS:
        raise AccountError(f"a user name is 1-{MAX_USERNAME} characters of a-z, 0-9, '.', '_' and '-'")
    return name


async def create_user(pool: asyncpg.Pool, username: str, password: str, role: Role) -> int:
    """Add an account; raise AccountError for a bad name, weak password, unknown role or taken name."""
    name = normalize_username(username)
    if (problem := check_strength(password)) is not None:
        raise AccountError(problem)
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}")
    hashed = await asyncio.to_thread(hash_password, password)
    user_id = await pool.fetchval(
        "INSERT INTO label_users (username, password_hash, role) VALUES ($1, $2, $3) "
        "ON CONFLICT (username) DO NOTHING RETURNING id",
        name,
        hashed,
        role,
    )
    if user_id is None:
        raise AccountError(f"the user name {name!r} is taken")
    return int(user_id)


async def set_password(pool: asyncpg.Pool, username: str, password: str) -> None:
    """Replace a password (and end that user's sessions)."""
    if (problem := check_strength(password)) is not None:
        raise AccountError(problem)
    hashed = await asyncio.to_thread(hash_password, password)
    async with pool.acquire() as conn, conn.transaction():
        user_id = await conn.fetchval(
            "UPDATE label_users SET password_hash = $2 WHERE username = $1 RETURNING id",
            normalize_username(username),
            hashed,
        )
        if user_id is None:
            raise AccountError("no such user")
        await conn.execute("DELETE FROM label_sessions WHERE user_id = $1", user_id)


async def set_active(pool: asyncpg.Pool, user_id: int, active: bool) -> None:
    """Enable or disable an account; disabling ends its sessions."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE label_users SET active = $2 WHERE id = $1", user_id, active)
        if not active:
            await conn.execute("DELETE FROM label_sessions WHERE user_id = $1", user_id)


async def list_users(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT id, username, role, active, created_at FROM label_users ORDER BY username"
    )
    return rows


async def _throttled(pool: asyncpg.Pool, keys: dict[str, int], window_s: int) -> bool:
    counts = await pool.fetch(
        "SELECT key, count(*) AS n FROM label_sign_in_failures "
        "WHERE key = ANY($1::text[]) AND failed_at > now() - make_interval(secs => $2) GROUP BY key",
        list(keys),
        float(window_s),
    )
    return any(r["n"] >= keys[r["key"]] for r in counts)


async def authenticate(
    pool: asyncpg.Pool, username: str, password: str, address: str, attempts: int, window_s: int
) -> User | None:
    """The user, or None for a wrong name or password; raise Throttled past the limit (checked first)."""
    name = username.strip().lower()[:MAX_USERNAME]
    # Per user name *from one address*: a guesser elsewhere cannot lock the owner out (a per-name limit
    # would let anyone do that); per address, a higher limit across names.
    keys = {f"user:{name}@{address}": attempts, f"address:{address}": attempts * ADDRESS_FACTOR}
    if await _throttled(pool, keys, window_s):
        raise Throttled
    row = await pool.fetchrow(
        "SELECT id, username, role, password_hash FROM label_users WHERE username = $1 AND active", name
    )
    stored = row["password_hash"] if row is not None else dummy_hash()
    matches = await asyncio.to_thread(verify_password, password, stored)  # always: an unknown name takes as long
    if row is None or not matches:
        await pool.executemany("INSERT INTO label_sign_in_failures (key) VALUES ($1)", [(k,) for k in keys])
        await pool.execute(  # what no window counts any more
            "DELETE FROM label_sign_in_failures WHERE failed_at < now() - make_interval(secs => $1)", float(window_s)
        )
        return None
    await pool.execute("DELETE FROM label_sign_in_failures WHERE key = $1", f"user:{name}@{address}")
    return User(row["id"], row["username"], row["role"])


async def start_session(pool: asyncpg.Pool, user: User, ttl_s: int) -> str:
    """A new session for ``user``; return the cookie token (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    await pool.execute(
        "INSERT INTO label_sessions (token_hash, user_id, csrf_token, expires_at) "
        "VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        _token_hash(token),
        user.id,
        secrets.token_urlsafe(32),
        float(ttl_s),
    )
    await pool.execute("DELETE FROM label_sessions WHERE expires_at < now()")
    return token


async def find_session(pool: asyncpg.Pool, token: str) -> Session | None:
    """The live session of an active user for this cookie token, or None."""
    row = await pool.fetchrow(
        "SELECT u.id, u.username, u.role, s.csrf_token FROM label_sessions s JOIN label_users u ON u.id = s.user_id "
        "WHERE s.token_hash = $1 AND s.expires_at > now() AND u.active",
        _token_hash(token),
    )
    return None if row is None else Session(User(row["id"], row["username"], row["role"]), row["csrf_token"])


async def end_session(pool: asyncpg.Pool, token: str) -> None:
    await pool.execute("DELETE FROM label_sessions WHERE token_hash = $1", _token_hash(token))
