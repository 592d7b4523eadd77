"""Who may call the API (docs/api.md, "Security model"): the bearer token, the Host header and
the Origin of state-changing requests and WebSocket handshakes. Shared by the request guard
(api.middleware), the routes (api.dependencies) and the latest-book fast path (api.fastpath)."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from typing import Final

#: Methods that change nothing: they need no Origin check (and, on loopback, no token).
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: Host names always answered: the ones a browser on this machine uses for a loopback API.
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "::1")


def bearer(authorization: str) -> str | None:
    """The credentials of an `Authorization: Bearer <credentials>` value; None for another
    scheme or none."""
    scheme, _, given = authorization.partition(" ")
    return given if scheme.lower() == "bearer" else None


def token_matches(given: str, token: bytes) -> bool:
    """Whether a presented token (surrounding spaces ignored) is ours, in constant time."""
    return hmac.compare_digest(given.strip().encode(), token)


def host_name(header: str) -> str | None:
    """The host of a Host header value: lower case, without the port, the brackets of an IPv6
    literal or a final dot; None when it is malformed (an unbracketed IPv6 address, a port that
    is not digits, nothing)."""
    value = header.strip().lower()
    if value.startswith("["):
        name, closed, rest = value[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = value.partition(":")
        if ":" in port:
            return None
    if port and not (port.isascii() and port.isdigit()):
        return None
    return name.removesuffix(".") or None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """The Host headers the API answers, on any port (DNS rebinding: a page of evil.example whose
    name then resolves to 127.0.0.1 reaches a loopback API with `Host: evil.example`, and the
    browser lets that page read the answers). Allowed: the loopback names, the bind address,
    any IP address (a browser sends one only for a page loaded from that address, which a
    rebinding page is not; probes and scrapers use them) and the `allowed` patterns (a name,
    `*.example.com` for its subdomains, `*` for any Host)."""

    def __init__(self, bind_host: str, allowed: Iterable[str]) -> None:
        patterns = [pattern.strip().lower() for pattern in allowed if pattern.strip()]
        self.allow_any = "*" in patterns
        names = {*LOOPBACK_HOSTS, bind_host.strip().strip("[]").lower().removesuffix(".")}
        names.update(p.removesuffix(".") for p in patterns if not p.startswith("*"))
        self._names = frozenset(names)
        self._suffixes = tuple(p[1:].removesuffix(".") for p in patterns if p.startswith("*."))
        # The fast path's check of the raw header, without parsing: the names as a Host header
        # spells them (IPv6 in brackets).
        self._raw = frozenset(
            (f"[{name}]" if ":" in name else name).encode("ascii", "replace") for name in names
        )

    def allows(self, header: str | None) -> bool:
        """Whether a request with this Host header (None: without one) is answered."""
        if self.allow_any:
            return True
        name = None if header is None else host_name(header)
        if name is None:
            return False
        return name in self._names or name.endswith(self._suffixes) or _is_ip(name)

    def allows_raw(self, header: bytes) -> bool:
        """True: `allows` would say so too. False: maybe not (any other spelling, an IP address,
        a wildcard's name); ask `allows`. A set lookup or two, for the fast path."""
        if self.allow_any or header in self._raw:
            return True
        name, colon, port = header.rpartition(b":")
        return bool(colon) and port.isdigit() and name in self._raw


class OriginPolicy:
    """The browser origins whose pages may make state-changing requests and open WebSockets
    (cross-site request forgery: any page may POST a form or a simple fetch to the API without
    a CORS preflight, and open a WebSocket to it): the API's own (the Origin's host and port are
    the request's Host header; either scheme, since TLS ends at a reverse proxy the API cannot
    see) and those approved for CORS (`*`: any)."""

    def __init__(self, cors_origins: Iterable[str]) -> None:
        approved = [origin.strip().lower().removesuffix("/") for origin in cors_origins]
        self.allow_any = "*" in approved
        self._approved = frozenset(approved)

    def allows(self, origin: str, host: str | None) -> bool:
        if self.allow_any:
            return True
        origin = origin.strip().lower()
        if origin in self._approved:
            return True
        scheme, separator, netloc = origin.partition("://")
        return (
            bool(separator)
            and scheme in ("http", "https")
            and host is not None
            and netloc == host.strip().lower()
        )
