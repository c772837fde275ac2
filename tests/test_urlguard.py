"""URLs the processor must refuse before any connection."""

from __future__ import annotations

import ipaddress

import pytest

from processor.errors import BlockedUrl
from processor.urlguard import GuardedResolver, check_url

BLOCKED = [
    "file:///etc/passwd",
    "ftp://example.com/a.jpg",
    "data:image/png;base64,AAAA",
    "javascript:alert(1)",
    "gopher://example.com/",
    "http://127.0.0.1/a.jpg",
    "http://127.1/a.jpg",
    "http://2130706433/a.jpg",
    "http://0x7f000001/a.jpg",
    "http://0177.0.0.1/a.jpg",
    "http://localhost/a.jpg",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/a.jpg",
    "http://[fe80::1]/",
    "http://[fd00::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://0.0.0.0/",
    "http://100.64.0.1/",
    "http://user:pw@example.com/",
    "http:///nohost",
    "not a url",
]


@pytest.mark.parametrize("url", BLOCKED)
def test_blocked_before_connecting(url: str) -> None:
    with pytest.raises(BlockedUrl):
        check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.com/a.jpg",
        "http://93.184.216.34/x.jpg",
        "http://[2606:2800:220:1:248:1893:25c8:1946]/x.jpg",
    ],
)
def test_public_urls_pass(url: str) -> None:
    assert str(check_url(url)).startswith("http")


def test_allow_list_opens_only_the_named_network() -> None:
    allowed = (ipaddress.ip_network("127.0.0.0/8"),)
    assert check_url("http://127.0.0.1:8080/a.jpg", allowed)
    assert check_url("http://localhost:8080/a.jpg", allowed)
    with pytest.raises(BlockedUrl):
        check_url("http://10.0.0.1/a.jpg", allowed)


async def test_resolver_drops_names_that_resolve_to_private_addresses() -> None:
    resolver = GuardedResolver()
    try:
        with pytest.raises(BlockedUrl, match="resolves only to blocked"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    allowed = GuardedResolver((ipaddress.ip_network("127.0.0.0/8"),))
    try:
        hosts = await allowed.resolve("localhost", 80)
        assert hosts and all(h["host"].startswith("127.") for h in hosts)
    finally:
        await allowed.close()
