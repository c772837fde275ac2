"""Which URLs may be fetched: http(s) only, and never into private networks unless allowed.

Checked twice: on the URL (scheme, IP literals in any notation) before a request, and
on every address the resolver returns, at connect time, for every redirect hop. aiohttp
skips the resolver for IP-literal hosts, which is why literals are checked here first.

IPv6 transition addresses (NAT64, 6to4, Teredo, IPv4-compatible and -translated) carry an
IPv4 address that a gateway or relay will reach on our behalf: ``64:ff9b::a9fe:a9fe`` is
169.254.169.254 behind a NAT64 gateway. Python calls most of them global, so each embedded
IPv4 address is judged too; the local-use NAT64 prefix and site-local addresses are refused.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from .errors import BlockedUrl

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ALLOWED_SCHEMES = frozenset({"http", "https"})
LOCALHOST_NAMES = frozenset({"localhost", "localhost.localdomain"})

# Prefixes whose last 32 bits are an IPv4 address: NAT64 (RFC 6052), IPv4-compatible, IPv4-translated (SIIT).
LOW32_IPV4_PREFIXES = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "::/96", "::ffff:0:0:0/96"))
# Refused whatever they carry: local-use NAT64 (RFC 8215) maps into private space; site-local is deprecated.
REFUSED_IPV6 = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b:1::/48", "fec0::/10"))


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses a transition address leads to (empty for a plain IPv6 address)."""
    if any(address in net for net in LOW32_IPV4_PREFIXES):
        return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo  # (server, client)
    return ()


def is_public(address: IpAddress, allowed: Iterable[Network] = ()) -> bool:
    """True when the address is inside an allowed network, or it and every IPv4 it carries is global."""
    allowed = tuple(allowed)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in net for net in allowed if net.version == address.version):
        return True
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in net for net in REFUSED_IPV6):
            return False
        if not all(is_public(inner, allowed) for inner in embedded_ipv4(address)):
            return False
    return address.is_global and not address.is_multicast


def _literal_address(host: str) -> IpAddress | None:
    """The address a host names literally, including forms like 2130706433 or 0x7f.1."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    try:  # inet_aton accepts decimal, octal, hex and short dotted forms, as libc resolvers do
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_url(url: str | URL, allowed: Iterable[Network] = ()) -> URL:
    """Parse and vet a URL before any connection; raise BlockedUrl."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (ValueError, TypeError) as exc:
        raise BlockedUrl(f"unparseable URL: {exc}") from None
    if parsed.scheme.lower() not in ALLOWED_SCHEMES:
        raise BlockedUrl(f"scheme {parsed.scheme or '(none)'!r} is not allowed; only http and https")
    host = parsed.host
    if not host:
        raise BlockedUrl("URL has no host")
    if parsed.user or parsed.password:
        raise BlockedUrl("URLs with credentials are not fetched")
    _check_host(host.rstrip(".").lower(), tuple(allowed))
    return parsed


def _check_host(host: str, allowed: tuple[Network, ...]) -> None:
    """Refuse a non-public IP literal or a localhost name (trailing dots already stripped)."""
    address = _literal_address(host)
    if address is not None and not is_public(address, allowed):
        raise BlockedUrl(f"address {address} is private, loopback, link-local or reserved")
    # RFC 6761: every *.localhost name is loopback, and many resolvers answer it without asking DNS.
    is_localhost = host in LOCALHOST_NAMES or host.endswith(".localhost")
    if is_localhost and not is_public(ipaddress.IPv4Address("127.0.0.1"), allowed):
        raise BlockedUrl(f"host {host} is not allowed")


class GuardedResolver(AbstractResolver):
    """Resolves through aiohttp's default resolver and drops non-public addresses."""

    def __init__(self, allowed: Iterable[Network] = (), inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else DefaultResolver()
        self._allowed = tuple(allowed)

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        safe = [r for r in results if is_public(ipaddress.ip_address(r["host"]), self._allowed)]
        if not safe:
            shown = ", ".join(sorted({r["host"] for r in results}))
            raise BlockedUrl(f"host {host} resolves only to blocked addresses ({shown})")
        return safe

    async def close(self) -> None:
        await self._inner.close()
