"""The bearer-token check, shared by the FastAPI routes and the latest-book fast path."""

from __future__ import annotations

import hmac


def bearer(authorization: str) -> str | None:
    """The credentials of an `Authorization: Bearer <credentials>` value; None for another
    scheme or none."""
    scheme, _, given = authorization.partition(" ")
    return given if scheme.lower() == "bearer" else None


def token_matches(given: str, token: bytes) -> bool:
    """Whether a presented token (surrounding spaces ignored) is ours, in constant time."""
    return hmac.compare_digest(given.strip().encode(), token)
