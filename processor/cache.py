"""Redis cache of results by URL and by content hash; the processor runs on without it.

Keys carry the model name and version (``model``, given with every call), so a new model never
serves an old result, even while workers switch models.
Any Redis failure is logged, counted, and turns the cache off for ``cooldown_s``
rather than slowing every event down with timeouts.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import metrics
from .batching import MicroBatcher

log = logging.getLogger(__name__)
KEY_PREFIX = "lip"
LOOKUP_BATCH = 256
LOOKUP_DELAY_S = 0.001


@dataclass(frozen=True, slots=True)
class CachedResult:
    """What is needed to re-emit a classification without fetching or inferring."""

    content_hash: str
    banner_score: float
    position_scores: dict[str, float]
    width: int
    height: int
    etag: str | None = None  # the URL's validators when it was last fetched or revalidated
    last_modified: str | None = None
    checked_at: float = 0.0  # unix time the URL's body was last fetched or revalidated

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "h": self.content_hash,
                "b": self.banner_score,
                "p": self.position_scores,
                "w": self.width,
                "ht": self.height,
                "e": self.etag,
                "lm": self.last_modified,
                "t": self.checked_at,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> CachedResult:
        d = orjson.loads(raw)
        scores = {k: float(v) for k, v in d["p"].items()}
        etag, modified = d.get("e"), d.get("lm")
        return cls(
            str(d["h"]),
            float(d["b"]),
            scores,
            int(d["w"]),
            int(d["ht"]),
            etag if isinstance(etag, str) else None,
            modified if isinstance(modified, str) else None,
            float(d.get("t") or 0.0),
        )


class ResultCache:
    """Async Redis cache; every method swallows Redis errors (and says so)."""

    def __init__(self, url: str, ttl_s: int, cooldown_s: float = 5.0) -> None:
        self._url = url
        self._ttl_s = ttl_s
        self._cooldown_s = cooldown_s
        self._client: aioredis.Redis | None = None
        self._down_until = 0.0
        # Concurrent lookups share one MGET round trip.
        self._lookups: MicroBatcher[str, bytes | None] = MicroBatcher(
            self._mget, LOOKUP_BATCH, LOOKUP_DELAY_S, split_on_error=False, name="cache"
        )

    async def start(self) -> None:
        if self._url:
            self._client = aioredis.Redis.from_url(self._url, socket_timeout=1.0, socket_connect_timeout=1.0)
            self._lookups.start()

    async def close(self) -> None:
        await self._lookups.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @staticmethod
    def url_key(url: str, model: str) -> str:
        return f"{KEY_PREFIX}:url:{model}:{hashlib.sha256(url.encode()).hexdigest()}"

    @staticmethod
    def hash_key(content_hash: str, model: str) -> str:
        return f"{KEY_PREFIX}:hash:{model}:{content_hash}"

    @property
    def available(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    async def get_url(self, url: str, model: str) -> CachedResult | None:
        return await self._get(self.url_key(url, model))

    async def get_hash(self, content_hash: str, model: str) -> CachedResult | None:
        return await self._get(self.hash_key(content_hash, model))

    async def _get(self, key: str) -> CachedResult | None:
        if not self.available:
            metrics.CACHE.labels(result="skipped").inc()
            return None
        try:
            raw = await self._lookups.submit(key)
        except (RedisError, OSError) as exc:
            self._failed("get", exc)
            return None
        if not raw:
            metrics.CACHE.labels(result="miss").inc()
            return None
        try:
            result = CachedResult.loads(raw)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a corrupt or foreign value: a miss
            metrics.CACHE.labels(result="corrupt").inc()
            log.warning("ignoring a corrupt cache value under %s: %s: %s", key, type(exc).__name__, exc)
            return None
        metrics.CACHE.labels(result="hit").inc()
        return result

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        assert self._client is not None
        values = await self._client.mget(keys)
        return [v.encode() if isinstance(v, str) else v for v in values]

    async def put_many(self, entries: list[tuple[str, str, CachedResult]]) -> None:
        """Store results (url, model, result) under their URL and content-hash keys in one pipeline."""
        if not entries or not self.available:
            return
        assert self._client is not None
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for url, model, result in entries:
                    value = result.dumps()
                    pipe.set(self.url_key(url, model), value, ex=self._ttl_s)
                    pipe.set(self.hash_key(result.content_hash, model), value, ex=self._ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("put", exc)

    def _failed(self, op: str, exc: Any) -> None:
        metrics.CACHE_ERRORS.inc()
        log.warning("redis %s failed, cache off for %.0f s: %s", op, self._cooldown_s, exc)
        self._down_until = time.monotonic() + self._cooldown_s
