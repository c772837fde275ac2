"""The fetcher against a real local HTTP server: caps, timeouts, retries, redirects."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from processor.dev.imageserver import ImageServer
from processor.errors import BlockedUrl, FetchFailed, TooLarge, TransientFetchError
from processor.fetch import Fetcher
from processor.settings import Settings


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    f = Fetcher(
        Settings(
            allow_networks="127.0.0.1/32",
            fetch_attempts=3,
            fetch_backoff_s=0.01,
            fetch_total_timeout_s=2.0,
            fetch_read_timeout_s=1.0,
            max_image_bytes=2_000_000,
        )
    )
    await f.start()
    try:
        yield f
    finally:
        await f.close()


async def test_fetches_an_image(fetcher: Fetcher, image_server: ImageServer, jpegs: dict[str, bytes]) -> None:
    name = sorted(jpegs)[0]
    download = await fetcher.fetch(image_server.url(name))
    assert download.data == jpegs[name] and download.attempts == 1


async def test_not_found_is_permanent_and_not_retried(fetcher: Fetcher, image_server: ImageServer) -> None:
    with pytest.raises(FetchFailed, match="HTTP 404") as info:
        await fetcher.fetch(f"{image_server.base_url}/status/404")
    assert not info.value.retriable
    assert image_server.requests["/status/404"] == 1


@pytest.mark.parametrize("code", [429, 500, 503])
async def test_transient_statuses_are_retried_then_fail(fetcher: Fetcher, image_server: ImageServer, code: int) -> None:
    with pytest.raises(TransientFetchError):
        await fetcher.fetch(f"{image_server.base_url}/status/{code}")
    assert image_server.requests[f"/status/{code}"] == 3


async def test_redirect_is_followed_and_rechecked(
    fetcher: Fetcher, image_server: ImageServer, jpegs: dict[str, bytes]
) -> None:
    name = sorted(jpegs)[1]
    ok = await fetcher.fetch(f"{image_server.base_url}/redirect?to={image_server.url(name)}")
    assert ok.data == jpegs[name]
    with pytest.raises(BlockedUrl):
        await fetcher.fetch(f"{image_server.base_url}/redirect?to=http://169.254.169.254/latest/meta-data/")
    with pytest.raises(BlockedUrl):
        await fetcher.fetch(f"{image_server.base_url}/redirect?to=file:///etc/passwd")


@pytest.mark.parametrize("location", ["http://[::1", "http://a:99999/", "//[::1/x", "http://a:-1/"])
async def test_malformed_redirect_location_is_a_permanent_fetch_failure(
    fetcher: Fetcher, image_server: ImageServer, location: str
) -> None:
    with pytest.raises(FetchFailed, match="malformed Location") as info:
        await fetcher.fetch(f"{image_server.base_url}/redirect?to={quote(location)}")
    assert not info.value.retriable and not isinstance(info.value, BlockedUrl)
    assert image_server.requests["/redirect"] == 1


async def test_body_over_the_cap_stops_reading(fetcher: Fetcher, image_server: ImageServer) -> None:
    with pytest.raises(TooLarge, match="stopped reading"):
        await fetcher.fetch(f"{image_server.base_url}/huge")


async def test_slow_drip_hits_the_total_timeout(
    fetcher: Fetcher, image_server: ImageServer, jpegs: dict[str, bytes]
) -> None:
    with pytest.raises(TransientFetchError, match="timed out"):
        await fetcher.fetch(f"{image_server.base_url}/slow/{sorted(jpegs)[0]}")


async def test_loopback_is_blocked_without_the_allow_list(image_server: ImageServer) -> None:
    strict = Fetcher(Settings(allow_networks=""))
    await strict.start()
    try:
        with pytest.raises(BlockedUrl):
            await strict.fetch(f"{image_server.base_url}/status/200")
        with pytest.raises(BlockedUrl):  # a name that resolves to loopback, checked at connect time
            await strict.fetch(f"http://localhost.:{image_server.port}/status/200")
    finally:
        await strict.close()
    assert image_server.requests["/status/200"] == 0


def answers_nxdomain(host: str) -> bool:
    """Whether this machine's resolver says the name does not exist (not: cannot ask)."""
    try:
        socket.getaddrinfo(host, 80)
    except socket.gaierror as exc:
        return exc.errno == socket.EAI_NONAME
    return False


async def test_nxdomain_is_permanent_and_not_retried(fetcher: Fetcher) -> None:
    host = "images.invalid"  # RFC 6761: .invalid never resolves
    if not answers_nxdomain(host):
        pytest.skip("this machine's resolver does not answer NXDOMAIN for .invalid")
    with pytest.raises(FetchFailed, match="does not exist") as info:
        await fetcher.fetch(f"http://{host}/a.jpg")
    assert not info.value.retriable


class FailingResolver(AbstractResolver):
    """Fails every lookup with the given getaddrinfo error, counting lookups."""

    def __init__(self, errno: int) -> None:
        self.errno = errno
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups += 1
        raise socket.gaierror(self.errno, "injected")

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("errno,retried", [(socket.EAI_NONAME, False), (socket.EAI_AGAIN, True)])
async def test_only_temporary_resolver_failures_are_retried(errno: int, retried: bool) -> None:
    resolver = FailingResolver(errno)
    fetcher = Fetcher(Settings(fetch_attempts=3, fetch_backoff_s=0.01), resolver=resolver)
    await fetcher.start()
    try:
        with pytest.raises(FetchFailed) as info:
            await fetcher.fetch("http://cdn.example.com/a.jpg")
    finally:
        await fetcher.close()
    assert info.value.retriable is retried
    assert resolver.lookups == (3 if retried else 1)


async def wait_for_requests(server: ImageServer, path: str, count: int, timeout_s: float = 5.0) -> None:
    """Wait, with a timeout, until the server has seen ``count`` requests for ``path``."""
    async with asyncio.timeout(timeout_s):
        while server.requests[path] < count:  # noqa: ASYNC110 - the server counts in a Counter, with no event to await
            await asyncio.sleep(0.01)


DRIP = b"\xff\xd8\xff" + bytes(509)  # two 256-byte chunks from /slow: about one second


async def test_a_slow_host_cannot_take_the_pool_from_healthy_ones(
    image_server: ImageServer, forbidden_server: ImageServer, jpegs: dict[str, bytes]
) -> None:
    settings = Settings(
        allow_networks="127.0.0.1/32,127.0.0.2/32",
        fetch_concurrency=4,
        fetch_per_host=2,
        fetch_attempts=1,
        fetch_total_timeout_s=5.0,
    )
    fetcher = Fetcher(settings)
    await fetcher.start()
    name = sorted(jpegs)[0]
    slow_path = f"/slow/{name}"  # drips a whole photo: far longer than this test
    slow = [asyncio.create_task(fetcher.fetch(f"{forbidden_server.base_url}{slow_path}")) for _ in range(4)]
    try:
        await wait_for_requests(forbidden_server, slow_path, 2)
        async with asyncio.timeout(1.0):  # healthy hosts get connections while the slow one drips
            healthy = await asyncio.gather(*(fetcher.fetch(image_server.url(name)) for _ in range(6)))
        assert all(d.data == jpegs[name] for d in healthy)
        assert forbidden_server.requests[slow_path] == 2  # the per-host limit held the other two back
    finally:
        for task in slow:
            task.cancel()
        await asyncio.gather(*slow, return_exceptions=True)
        await fetcher.close()


async def test_the_download_timeout_starts_when_a_connection_is_obtained(image_server: ImageServer) -> None:
    image_server.images["drip"] = DRIP
    settings = Settings(allow_networks="127.0.0.1/32", fetch_concurrency=1, fetch_attempts=1, fetch_total_timeout_s=1.7)
    fetcher = Fetcher(settings)
    await fetcher.start()
    try:  # the second waits about a second for the only connection, then downloads for about a second
        first, second = await asyncio.gather(*(fetcher.fetch(f"{image_server.base_url}/slow/drip") for _ in range(2)))
    finally:
        await fetcher.close()
    assert first.data == second.data == DRIP


async def test_waiting_for_a_connection_is_bounded(image_server: ImageServer) -> None:
    image_server.images["drip"] = DRIP
    settings = Settings(
        allow_networks="127.0.0.1/32",
        fetch_concurrency=1,
        fetch_attempts=1,
        fetch_pool_wait_s=0.2,
        fetch_connect_timeout_s=0.2,
        fetch_total_timeout_s=5.0,
    )
    fetcher = Fetcher(settings)
    await fetcher.start()
    try:
        first = asyncio.create_task(fetcher.fetch(f"{image_server.base_url}/slow/drip"))
        await wait_for_requests(image_server, "/slow/drip", 1)
        started = time.perf_counter()
        with pytest.raises(TransientFetchError, match="waiting for a connection"):
            await fetcher.fetch(image_server.url("drip"))
        assert time.perf_counter() - started < 0.8
        assert (await first).data == DRIP
    finally:
        await fetcher.close()


async def test_retry_after_is_capped(image_server: ImageServer) -> None:
    settings = Settings(
        allow_networks="127.0.0.1/32", fetch_attempts=2, fetch_backoff_s=0.01, fetch_max_retry_after_s=0.2
    )
    fetcher = Fetcher(settings)
    await fetcher.start()
    try:
        async with asyncio.timeout(3.0):  # not the hour the server asks for
            with pytest.raises(TransientFetchError, match="HTTP 503"):
                await fetcher.fetch(f"{image_server.base_url}/status/503?retry_after=3600")
    finally:
        await fetcher.close()
    assert image_server.requests["/status/503"] == 2
