"""URLs the processor must refuse before any connection."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from processor.errors import BlockedUrl
from processor.urlguard import GuardedResolver, check_url, is_public

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

# IPv6 transition forms that carry an IPv4 address, and names with a trailing dot (#12, row 11)
BLOCKED_WRAPPED = [
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 of 169.254.169.254
    "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
    "http://[64:ff9b::10.0.0.1]/",
    "http://[64:ff9b:1::808:808]/",  # local-use NAT64 prefix: refused whatever it embeds
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
    "http://[2002:c0a8:101::]/",  # 6to4 of 192.168.1.1
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",  # Teredo, client 192.0.2.45
    "http://[2001:0:a9fe:a9fe::ffff:f7f7]/",  # Teredo, server 169.254.169.254
    "http://[::a9fe:a9fe]/",  # IPv4-compatible
    "http://[::127.0.0.1]/",
    "http://[::ffff:0:a00:1]/",  # IPv4-translated (SIIT) 10.0.0.1
    "http://[fec0::1]/",  # site-local
    "http://[fec0:1:2::3]/",
    "http://127.0.0.1./",
    "http://0x7f.1./",
    "http://2130706433./",
    "http://localhost./",
    "http://LOCALHOST../",
    "http://metadata.localhost/",
]


@pytest.mark.parametrize("url", BLOCKED + BLOCKED_WRAPPED)
def test_blocked_before_connecting(url: str) -> None:
    with pytest.raises(BlockedUrl):
        check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.com/a.jpg",
        "http://93.184.216.34/x.jpg",
        "http://[2606:2800:220:1:248:1893:25c8:1946]/x.jpg",
        "http://[64:ff9b::808:808]/x.jpg",  # NAT64 of 8.8.8.8
        "http://[2002:808:808::1]/x.jpg",  # 6to4 of 8.8.8.8
        "https://cdn.example.com./a.jpg",
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


@pytest.mark.parametrize(
    "address,public",
    [
        ("64:ff9b::a9fe:a9fe", False),
        ("64:ff9b::808:808", True),
        ("64:ff9b:1::808:808", False),
        ("2002:a9fe:a9fe::1", False),
        ("2002:808:808::1", True),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
        ("::a9fe:a9fe", False),
        ("::ffff:0:a00:1", False),
        ("fec0::1", False),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
    ],
)
def test_transition_addresses_are_judged_by_the_ipv4_they_carry(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def test_allow_list_applies_to_the_embedded_ipv4() -> None:
    allowed = (ipaddress.ip_network("10.0.0.0/8"),)
    assert is_public(ipaddress.ip_address("64:ff9b::a00:1"), allowed)
    assert not is_public(ipaddress.ip_address("64:ff9b::a9fe:a9fe"), allowed)
    assert not is_public(ipaddress.ip_address("fec0::1"), allowed)


class FixedResolver(AbstractResolver):
    """Answers every name with the given addresses."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0) for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_resolver_unwraps_transition_addresses() -> None:
    blocked = ("64:ff9b::a9fe:a9fe", "2002:a00:1::1", "fec0::1", "::7f00:1", "64:ff9b:1::808:808")
    resolver = GuardedResolver(inner=FixedResolver(*blocked))
    with pytest.raises(BlockedUrl, match="resolves only to blocked"):
        await resolver.resolve("nat64.example", 80)
    mixed = GuardedResolver(inner=FixedResolver(*blocked, "64:ff9b::808:808"))
    assert [r["host"] for r in await mixed.resolve("nat64.example", 80)] == ["64:ff9b::808:808"]
