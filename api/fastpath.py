"""A pure-ASGI fast path for the two hottest reads: GET /v1/instruments/{id}/book and /bbo.

Through FastAPI a request crosses Starlette's middleware stack, the router, dependency
injection and pydantic validation of the path and query: about half a millisecond of Python
per request, which caps one uvicorn worker at ~2,000 requests/s. These two routes only read an
already encoded body from LiveState, so the fast path answers the common valid request itself
in a few microseconds and hands EVERYTHING else to FastAPI unchanged.

It answers only when all of this holds, else it returns None and the request goes through the
FastAPI route as if the fast path did not exist (so 404, 422, 401, CORS, HEAD, redirects and
the OpenAPI schema stay exactly those of the routes in api/routers/books.py):

* GET of exactly /v1/instruments/<ascii digits>/book or .../bbo, no root_path;
* a query string that is empty or only `depth=<digits>` (book only) and `publisher_id=<digits>`,
  each at most once, within the routes' ranges; anything else (unknown or repeated parameters,
  percent-encoding, `+`, empty values) is left to FastAPI, whose parsing rules are the reference;
* the instrument, publisher and book/BBO are known (a miss is FastAPI's 404 to give);
* a Host header that is one of the always-allowed or listed names as written, with or without
  a port (api.auth.HostPolicy.allows_raw: a set lookup); any other (an IP address, a wildcard's
  name, an unknown Host) goes to FastAPI, whose request guard answers 400 or accepts it;
* with a token configured, an `Authorization: Bearer <token>` header that matches (a missing or
  wrong one, or `?token=`, goes to FastAPI, which answers 401 or accepts it);
* with CORS configured, no `Origin` header: CORSMiddleware decides what a cross-origin request
  gets, so such requests take the full stack.

The answer is byte-for-byte what the route sends (same body from the same LiveState cache, same
`content-length` and `content-type` headers) and is recorded in `mbo_api_request_seconds` under
the same labels the metrics middleware would use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from starlette.types import Scope, Send

from api.auth import HostPolicy, bearer, token_matches
from api.state import Key, LiveState
from mbo_core.metrics import API_REQUEST_SECONDS

PREFIX: Final = "/v1/instruments/"
BOOK_ROUTE: Final = "/v1/instruments/{instrument_id}/book"
BBO_ROUTE: Final = "/v1/instruments/{instrument_id}/bbo"
#: The routes' parameter bounds and default (api.params declares the parameters with them).
DEFAULT_DEPTH: Final = 10
MAX_INSTRUMENT: Final = 2**32 - 1
MAX_PUBLISHER: Final = 65535
_JSON: Final = (b"content-type", b"application/json")


class FastPath:
    """Answers valid latest-book/BBO GETs straight from LiveState; `hits` counts them."""

    def __init__(
        self,
        state: LiveState,
        *,
        token: str | None,
        cors: bool,
        hosts: HostPolicy,
        max_depth: int,
    ) -> None:
        self.state = state
        self.max_depth = max_depth
        self.hits = 0
        self._token = None if token is None else token.encode()
        self._cors = cors
        self._hosts = hosts
        # Bound once: labels() validates and locks on every call, observe() on a child does not.
        self._observe_book: Callable[[float], None] = API_REQUEST_SECONDS.labels(
            route=BOOK_ROUTE, method="GET", status="200"
        ).observe
        self._observe_bbo: Callable[[float], None] = API_REQUEST_SECONDS.labels(
            route=BBO_ROUTE, method="GET", status="200"
        ).observe

    async def __call__(self, scope: Scope, send: Send) -> bool:
        """Answer `scope` if it is a request this path handles; False: nobody answered yet."""
        started = time.perf_counter()
        found = self._lookup(scope)
        if found is None:
            return False
        body, observe = found
        self.hits += 1
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body)), _JSON],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            observe(time.perf_counter() - started)
        return True

    def _lookup(self, scope: Scope) -> tuple[bytes, Callable[[float], None]] | None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if not path.startswith(PREFIX):
            return None
        segment, _, leaf = path[len(PREFIX) :].partition("/")
        if leaf == "book":
            is_book = True
        elif leaf == "bbo":
            is_book = False
        else:
            return None
        if not (segment.isascii() and segment.isdigit() and len(segment) <= 10):
            return None
        instrument_id = int(segment)
        if instrument_id > MAX_INSTRUMENT or not self.state.has_instrument(instrument_id):
            return None
        query = _query(scope["query_string"], is_book, self.max_depth)
        if query is None or not self._allowed(scope["headers"]):
            return None
        depth, publisher_id = query
        key: Key | None = self.state.resolve(instrument_id, publisher_id)
        if key is None:
            return None
        if is_book:
            body = self.state.book_json(key, depth)
            observe = self._observe_book
        else:
            body = self.state.bbo_json(key)
            observe = self._observe_bbo
        return None if body is None else (body, observe)

    def _allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        if self._token is None and not self._cors:
            # Only the Host to check, usually the first header: stop at it.
            for name, value in headers:
                if name == b"host":
                    return self._hosts.allows_raw(value)
            return False
        host: bytes | None = None
        authorization: bytes | None = None
        # The first of each, as Starlette's Headers.get and the request guard read them.
        for name, value in headers:
            if name == b"host":
                if host is None:
                    host = value
            elif name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"origin" and self._cors:
                return False
        if host is None or not self._hosts.allows_raw(host):
            return False
        if self._token is None:
            return True
        if authorization is None:
            return False
        # api.dependencies.authorized on the bearer branch (Starlette decodes headers as latin-1).
        given = bearer(authorization.decode("latin-1"))
        return given is not None and token_matches(given, self._token)


def _query(raw: bytes, is_book: bool, max_depth: int) -> tuple[int, int | None] | None:
    """(depth, publisher_id) from the plainest query strings; None: let FastAPI parse it."""
    depth, publisher_id = DEFAULT_DEPTH, None
    if not raw:
        return depth, publisher_id
    seen_depth = False
    for part in raw.split(b"&"):
        name, _, value = part.partition(b"=")
        # bytes.isdigit() is ASCII-only; the length bound keeps int() trivial.
        if not (value.isdigit() and len(value) <= 5):
            return None
        if name == b"depth" and is_book and not seen_depth:
            seen_depth = True
            depth = int(value)
            if not 1 <= depth <= max_depth:
                return None
        elif name == b"publisher_id" and publisher_id is None:
            publisher_id = int(value)
            if publisher_id > MAX_PUBLISHER:
                return None
        else:
            return None
    return depth, publisher_id
