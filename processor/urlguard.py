"""Which URLs may be fetched: http(s) only, and never into private networks unless allowed.

Checked twice: on the URL (scheme, IP literals in any notation) before a request, and
on every address the resolver returns, at connect time, for every redirect hop. aiohttp
skips the resolver for IP-literal hosts, which is why literals are checked here first.
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


def is_public(address: IpAddress, allowed: Iterable[Network] = ()) -> bool:
    """True when the address is globally routable or inside an allowed network."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in net for net in allowed if net.version == address.version):
        return True
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
    address = _literal_address(host)
    if address is not None and not is_public(address, allowed):
        raise BlockedUrl(f"address {address} is private, loopback, link-local or reserved")
    if host.rstrip(".").lower() in ("localhost", "localhost.localdomain") and not any(
        ipaddress.ip_address("127.0.0.1") in n for n in allowed if n.version == 4
    ):
        raise BlockedUrl("host localhost is not allowed")
    return parsed


class GuardedResolver(AbstractResolver):
    """Resolves through aiohttp's default resolver and drops non-public addresses."""

    def __init__(self, allowed: Iterable[Network] = ()) -> None:
        self._inner = DefaultResolver()
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
