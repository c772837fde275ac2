"""Password hashing with scrypt (memory-hard; in the standard library), one self-describing string per hash."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os

# 32 MiB and ~0.1 s per hash (OWASP lists N=2**17 as its first choice; 2**15 keeps a small sign-in
# server responsive, and the sign-in rate limit bounds online guessing anyway).
N, R, P = 2**15, 8, 1
MAX_MEM = 64 * 1024 * 1024
SALT_BYTES = 16
KEY_BYTES = 32
MIN_LENGTH = 10


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=MAX_MEM, dklen=KEY_BYTES)


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$key`` (base64), salted at random."""
    salt = os.urandom(SALT_BYTES)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(_derive(password, salt, N, R, P))}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time comparison; False for a malformed hash)."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        derived = _derive(password, base64.b64decode(salt), int(n), int(r), int(p))
        return hmac.compare_digest(derived, base64.b64decode(key))
    except ValueError:
        return False


def check_strength(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    return None


@functools.cache
def dummy_hash() -> str:
    """A hash to verify against when the user is unknown, so that both cases take as long."""
    return hash_password(os.urandom(16).hex())
