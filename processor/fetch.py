"""Downloads with one shared aiohttp session: bounded, timed out, size-capped, re-checked per hop.

Connections are bounded in all (``fetch_concurrency``) and per host (``fetch_per_host``), so a
host that drips its bodies holds a few connections, not the pool. Waiting for a connection has
its own bound (``fetch_pool_wait_s``); the whole-download timeout starts only once aiohttp hands
over a connection (seen through its trace hooks), so a wait behind slow hosts does not eat into
a healthy download's time.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import aiohttp
from aiohttp.abc import AbstractResolver
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base
from yarl import URL

from . import __version__, metrics
from .errors import BlockedUrl, FetchFailed, ProcessorError, TooLarge, TransientFetchError
from .settings import Settings
from .urlguard import GuardedResolver, check_url

REDIRECTS = frozenset({301, 302, 303, 307, 308})
NOT_MODIFIED = 304
CHUNK_BYTES = 64 * 1024
# getaddrinfo's answers that the name does not exist (NXDOMAIN, no address): asking again cannot help.
# EAI_AGAIN (the resolver could not be reached or timed out) stays transient.
PERMANENT_DNS_ERRNOS = frozenset({socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)})


@dataclass(frozen=True, slots=True)
class Download:
    """A fetched body, or (``not_modified``) the server's word that the copy we have is current."""

    data: bytes
    url: str  # after redirects
    attempts: int
    elapsed_s: float
    validators: Validators = field(default_factory=lambda: Validators(None, None))
    not_modified: bool = False


@dataclass(frozen=True, slots=True)
class Validators:
    """What a server said identifies a body (its ETag, its Last-Modified), for conditional requests."""

    etag: str | None
    last_modified: str | None

    def headers(self) -> dict[str, str]:
        conditions = {"If-None-Match": self.etag, "If-Modified-Since": self.last_modified}
        return {k: v for k, v in conditions.items() if v}

    @classmethod
    def of(cls, resp: aiohttp.ClientResponse) -> Validators:
        return cls(resp.headers.get("ETag"), resp.headers.get("Last-Modified"))


@dataclass(frozen=True, slots=True)
class _Body:
    data: bytes
    validators: Validators
    not_modified: bool = False


class _WaitBackoffOrRetryAfter(wait_base):
    """Exponential backoff with jitter, or the server's Retry-After when it gave one."""

    def __init__(self, first_s: float, max_retry_after_s: float) -> None:
        self.first_s = first_s
        self.max_retry_after_s = max_retry_after_s

    def __call__(self, retry_state: object) -> float:
        outcome = getattr(retry_state, "outcome", None)
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, TransientFetchError) and exc.retry_after_s is not None:
            return min(exc.retry_after_s, self.max_retry_after_s)
        attempt = int(getattr(retry_state, "attempt_number", 1))
        return self.first_s * 2.0 ** (attempt - 1) * random.uniform(0.5, 1.5)


class _Hop:
    """One request's clocks: a loose bound until a connection is obtained, then the download timeout."""

    def __init__(self, download_s: float) -> None:
        self.download_s = download_s
        self.deadline: asyncio.Timeout | None = None
        self.connected = False

    def start_download_clock(self) -> None:
        self.connected = True
        if self.deadline is not None:
            self.deadline.reschedule(asyncio.get_running_loop().time() + self.download_s)


async def _on_connection(_session: aiohttp.ClientSession, context: SimpleNamespace, _params: object) -> None:
    """aiohttp trace hook: a new or reused connection was handed to a request."""
    hop = getattr(context, "trace_request_ctx", None)
    if isinstance(hop, _Hop):
        hop.start_download_clock()


def _trace_config() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(_on_connection)
    trace.on_connection_reuseconn.append(_on_connection)
    return trace


class Fetcher:
    """Fetches image bytes; create once, ``start()``, ``close()``."""

    def __init__(self, settings: Settings, resolver: AbstractResolver | None = None) -> None:
        self.settings = settings
        self._resolver = resolver  # under the address guard; aiohttp's default when None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        s = self.settings
        connector = aiohttp.TCPConnector(
            limit=s.fetch_concurrency,
            limit_per_host=s.fetch_per_host,
            resolver=GuardedResolver(s.allow_networks, self._resolver),
            ttl_dns_cache=30,
        )
        # aiohttp's connect covers the wait for a pool slot and the connection itself; total is ours (_Hop).
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=s.fetch_pool_wait_s + s.fetch_connect_timeout_s,
            sock_connect=s.fetch_connect_timeout_s,
            sock_read=s.fetch_read_timeout_s,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            trace_configs=[_trace_config()],
            auto_decompress=False,
            trust_env=False,
            headers={"User-Agent": f"listing-image-processor/{__version__}", "Accept": "image/*"},
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, validators: Validators | None = None) -> Download:
        """Fetch with retries for transient failures; raise a ProcessorError subclass. With ``validators``
        the request is conditional: a 304 answers ``not_modified`` with no body."""
        started = time.perf_counter()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.fetch_attempts),
            wait=_WaitBackoffOrRetryAfter(self.settings.fetch_backoff_s, self.settings.fetch_max_retry_after_s),
            retry=retry_if_exception(lambda e: getattr(e, "retriable", False)),
            reraise=True,
        )
        attempts = 0
        async for attempt in retrying:
            with attempt:
                attempts += 1
                body, final = await self._fetch_once(url, validators.headers() if validators else {})
        elapsed = time.perf_counter() - started
        return Download(body.data, final, attempts, elapsed, body.validators, body.not_modified)

    async def _fetch_once(self, url: str, conditions: dict[str, str]) -> tuple[_Body, str]:
        target = check_url(url, self.settings.allow_networks)
        for _ in range(self.settings.max_redirects + 1):
            body = await self._request(target, conditions)
            if isinstance(body, _Body):
                return body, str(target)
            target = body
        raise FetchFailed(f"more than {self.settings.max_redirects} redirects")

    async def _request(self, target: URL, conditions: dict[str, str]) -> _Body | URL:
        """One hop: the body, or where a redirect leads."""
        assert self._session is not None, "Fetcher.start() was not called"
        s = self.settings
        hop = _Hop(s.fetch_total_timeout_s)
        backstop_s = s.fetch_pool_wait_s + s.fetch_connect_timeout_s + s.fetch_total_timeout_s
        try:  # the backstop only backs up aiohttp's connect timeout: the trace hook resets the deadline
            async with asyncio.timeout(backstop_s) as hop.deadline:
                get = self._session.get(target, allow_redirects=False, trace_request_ctx=hop, headers=conditions)
                async with get as resp:
                    return await self._respond(target, resp, bool(conditions))
        except ProcessorError:
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _fetch_error(exc, target, hop.connected) from None

    async def _respond(self, target: URL, resp: aiohttp.ClientResponse, conditional: bool) -> _Body | URL:
        metrics.FETCH_RESPONSES.labels(status=str(resp.status)).inc()
        if resp.status in REDIRECTS:
            return self._next_hop(target, resp)
        if resp.status == NOT_MODIFIED and conditional:
            return _Body(b"", Validators.of(resp), not_modified=True)
        self._raise_for_status(resp)
        return _Body(await self._read_capped(resp), Validators.of(resp))

    def _next_hop(self, current: URL, resp: aiohttp.ClientResponse) -> URL:
        location = resp.headers.get("Location")
        if not location:
            raise FetchFailed(f"HTTP {resp.status} without a Location header")
        try:
            following = current.join(URL(location))
        except (ValueError, TypeError) as exc:  # e.g. "http://[::1" or a port over 65535
            raise FetchFailed(f"HTTP {resp.status} to a malformed Location {location[:200]!r}: {exc}") from None
        return check_url(following, self.settings.allow_networks)

    @staticmethod
    def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
        if resp.status == 429 or resp.status >= 500:
            raise TransientFetchError(f"HTTP {resp.status}", _retry_after(resp.headers.get("Retry-After")))
        if not 200 <= resp.status < 300:
            raise FetchFailed(f"HTTP {resp.status}")

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        cap = self.settings.max_image_bytes
        if resp.content_length is not None and resp.content_length > cap:
            raise TooLarge(f"Content-Length {resp.content_length} is over the {cap}-byte cap")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            size += len(chunk)
            if size > cap:
                raise TooLarge(f"body is over the {cap}-byte cap (stopped reading)")
            chunks.append(chunk)
        metrics.FETCH_BYTES.inc(size)
        return b"".join(chunks)


def _fetch_error(exc: TimeoutError | aiohttp.ClientError, target: URL, connected: bool) -> ProcessorError:
    """The processor error for an aiohttp failure: permanent or transient."""
    if isinstance(exc, TimeoutError) and not connected:
        return TransientFetchError(f"timed out waiting for a connection to {target.host} (pool full or connect)")
    if isinstance(exc, TimeoutError):
        return TransientFetchError(f"timed out fetching {target}")
    if isinstance(exc, aiohttp.InvalidURL):
        return BlockedUrl(f"invalid URL: {exc}")
    if isinstance(exc, aiohttp.ClientConnectorDNSError) and exc.os_error.errno in PERMANENT_DNS_ERRNOS:
        return FetchFailed(f"host {target.host} does not exist (DNS: {exc.os_error.strerror})")
    return TransientFetchError(f"{type(exc).__name__}: {exc}")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


__all__ = ["Download", "Fetcher"]
