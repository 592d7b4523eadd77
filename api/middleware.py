"""ASGI middleware of the API."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mbo_core.metrics import API_REQUEST_SECONDS


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
