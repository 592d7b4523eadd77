"""ASGI middleware of the API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import SAFE_METHODS, HostPolicy, OriginPolicy
from api.responses import error_response
from mbo_core.metrics import API_REQUEST_SECONDS

UNKNOWN_HOST: Final = "unknown Host header"
CROSS_ORIGIN: Final = "cross-origin request refused"


class RequestGuard:
    """Refuses, before CORS and the routes see them, HTTP requests and WebSocket handshakes with
    an unknown Host header (400, DNS rebinding) and state-changing requests (any method but GET,
    HEAD and OPTIONS) and WebSocket handshakes from a browser origin that is neither the API's
    own nor approved for CORS (403, cross-site request forgery and WebSocket hijacking).
    Requests without an Origin header (curl, programs) are not cross-origin requests. A refused
    WebSocket gets the HTTP answer where the server can send one (uvicorn can), else a close
    with 1008 before the handshake, which servers answer with 403."""

    def __init__(self, app: ASGIApp, *, hosts: HostPolicy, origins: OriginPolicy) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            # The first of each, as Starlette's Headers.get reads them (latin-1).
            if name == b"host" and host is None:
                host = value.decode("latin-1")
            elif name == b"origin" and origin is None:
                origin = value.decode("latin-1")
        if not self.hosts.allows(host):
            shown = "none" if host is None else repr(host[:100])
            detail = (
                f"{UNKNOWN_HOST} {shown}: the API answers localhost, its bind address, IP "
                "addresses and the names of MBO_API__ALLOWED_HOSTS"
            )
            await _refuse(scope, receive, send, 400, UNKNOWN_HOST, detail)
            return
        if (
            origin is not None
            and (kind == "websocket" or scope["method"] not in SAFE_METHODS)
            and not self.origins.allows(origin, host)
        ):
            detail = (
                f"{CROSS_ORIGIN}: origin {origin[:100]!r} is neither the API's own nor one of "
                "MBO_API__CORS_ORIGINS"
            )
            await _refuse(scope, receive, send, 403, CROSS_ORIGIN, detail)
            return
        await self.app(scope, receive, send)


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, reason: str, detail: str
) -> None:
    if scope["type"] == "websocket" and "websocket.http.response" not in (
        scope.get("extensions") or {}
    ):
        await send({"type": "websocket.close", "code": 1008, "reason": reason})
        return
    # Starlette's Response sends a WebSocket denial response for a websocket scope.
    await error_response(status, detail)(scope, receive, send)


class RequestMetrics:
    """API_REQUEST_SECONDS per route template (not raw path: bounded labels)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # labels() validates, formats and locks on every call (~half the cost of this
        # middleware); the label sets are few (routes x methods x statuses), so keep them.
        self._observers: dict[tuple[str, str, int], Callable[[float], None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            labels = (path, scope["method"], status)
            observe = self._observers.get(labels)
            if observe is None:
                observe = self._observers[labels] = API_REQUEST_SECONDS.labels(
                    route=path, method=scope["method"], status=str(status)
                ).observe
            observe(time.perf_counter() - started)
