"""The HTTP API (FastAPI): live books from memory, history from ClickHouse, replay control.

Routes (all JSON; /v1 ones need `Authorization: Bearer <MBO_API__TOKEN>` when a token is set,
or `?token=` for WebSocket/SSE, which browsers cannot give headers): see docs/api.md and the
OpenAPI page at /docs. The common valid GET of the latest book or BBO is answered by
api.fastpath in front of FastAPI, from the same cached encoding the routes below serve.
Errors: 404 unknown instrument/publisher/book, 422 bad parameter (the field named in
`detail[].loc`), 503 backend down (`backend`: kafka or clickhouse), 401 missing or wrong token,
403 a state-changing request without a token on a non-loopback bind or from a foreign origin,
400 an unknown Host header (docs/api.md, "Security model"). User input never produces a 500.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from api.auth import HostPolicy, OriginPolicy
from api.fastpath import FastPath
from api.middleware import RequestGuard, RequestMetrics
from api.params import MAX_DEPTH, ParamError
from api.replay_control import FileReplay, ReplayController, ReplayRefusedError
from api.responses import error_response, json_response
from api.routers import books, health, history, live, replay_control, sql, symbols
from api.routers.docs import add_docs
from api.sink_host import SinkRunner, run_sink_in_process
from api.state import LiveState, consume_live
from api.store import BackendUnavailableError, Store
from mbo_core.heap import freeze_heap, keep_frozen
from mbo_core.settings import Settings

log = logging.getLogger("api")

REPO = Path(__file__).resolve().parents[1]
#: How long a worker thread running Python (the in-process sink's inserts, ClickHouse reads
#: through asyncio.to_thread) may keep the GIL when the event loop wants it back. With CPython's
#: 5 ms the loop could wait that long at every blocking call while such a thread ran: with the
#: sink busy, the latest-book GET at 2,000/s went from p50 6.8 / p99 262 ms to 4.6 / 45 ms.
SWITCH_INTERVAL_S = 0.0005


class _Api(FastAPI):
    """FastAPI with the latest-book/BBO fast path (api.fastpath) in front of its whole stack:
    the fast path answers the common valid request, anything else goes through FastAPI."""

    fast_path: FastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        if fast is not None and scope["type"] == "http" and await fast(scope, send):
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    *,
    clickhouse: Client | None = None,
    sink: SinkRunner | None = None,
    file_replay: FileReplay | None = None,
    consume: bool = True,
) -> FastAPI:
    """The API app. clickhouse: an open client to use (else one is opened on demand);
    sink: also run this ClickHouse sink (sink.app.run_sink) in this process on the same client
    (chDB allows one process per data directory); file_replay: the producer's replay of a file
    (producer.app.produce_file) that replay control runs, None: replay control is off;
    consume: follow the live topics (tests may turn it off). `mbo api` passes the stages'
    functions: the API package imports no other stage."""
    state = LiveState()
    store = Store(settings, clickhouse)
    token = settings.api.token.get_secret_value() if settings.api.token else None
    app = _Api(
        title="mbo-pipeline API",
        version="1",
        description="Exact limit order books rebuilt from Databento MBO data: live from Kafka, "
        "history from ClickHouse, replay control. See docs/api.md. Units: prices are exact "
        "decimal strings; every time is integer ns since the epoch with an ISO-8601 sibling "
        "(`ts_event_iso`). Not listed here (OpenAPI has no WebSockets): "
        "`WS /v1/instruments/{instrument_id}/live?max_hz=&depth=&publisher_id=`, the same feed "
        "as the `/events` route below, one JSON text message per update; errors as "
        '`{"type": "error", "status", "detail"}` and close code 4000 + status. Its messages '
        "and close codes: docs/asyncapi.yaml (AsyncAPI 3.0).",
        lifespan=_lifespan(settings, consume=consume, sink=sink),
        # Served by api.routers.docs with local assets: FastAPI's pull theirs from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.token = token
    app.state.live = state
    app.state.store = store
    app.state.replay_control = ReplayController(settings, file_replay)
    app.state.sink_error = None
    app.state.write_refusal = _write_refusal(settings, token)
    origins = settings.api.cors_origin_list()
    hosts = HostPolicy(settings.api.host, settings.api.allowed_host_list())
    app.fast_path = app.state.fast_path = FastPath(
        state, token=token, cors=bool(origins), hosts=hosts, max_depth=MAX_DEPTH
    )
    # Added innermost first: RequestMetrics (so refusals are counted too), RequestGuard, CORS.
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(RequestGuard, hosts=hosts, origins=OriginPolicy(origins))
    app.add_middleware(RequestMetrics)
    _add_error_handlers(app)
    for surface in (books, history, symbols, live, replay_control, sql, health):
        app.include_router(surface.router)
    add_docs(app)
    _serve_ui(app, settings)
    return app


def _write_refusal(settings: Settings, token: str | None) -> str | None:
    """Why state-changing requests are refused (403): without a token, when the API listens on
    anything but loopback, where anyone who reaches the port could otherwise start replays.
    None: they are not (a token is set, or the API listens on loopback only)."""
    if token is not None or settings.api.is_loopback():
        return None
    return (
        f"state-changing requests need a token when the API listens on {settings.api.host} "
        "(not loopback): set MBO_API__TOKEN and send it as `Authorization: Bearer <token>`"
    )


def _lifespan(
    settings: Settings, *, consume: bool, sink: SinkRunner | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's background work while it serves: the live consumer (consume), the sink (sink)
    and the heap freezing, with the GIL switch interval at SWITCH_INTERVAL_S."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state: LiveState = app.state.live
        store: Store = app.state.store
        control: ReplayController = app.state.replay_control
        log.info("event loop: %s", type(asyncio.get_running_loop()).__module__)
        freeze_heap()
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        if consume:
            tasks.append(asyncio.create_task(consume_live(settings, state, stop), name="live"))
        if sink is not None:
            tasks.append(
                asyncio.create_task(
                    run_sink_in_process(app, sink, settings, store, stop), name="sink"
                )
            )
        tasks.append(asyncio.create_task(keep_frozen(stop), name="heap"))
        try:
            yield
        finally:
            stop.set()
            await control.close()
            for task in tasks:
                try:
                    await asyncio.wait_for(task, 30)
                except TimeoutError:
                    task.cancel()
                except Exception:
                    log.exception("background task %s failed", task.get_name())
            store.close()
            sys.setswitchinterval(switch_interval)

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler echoes the input with json.dumps, which refuses NaN and
        # infinities (JSON allows neither; Python's parser reads NaN, Infinity and 1e400): such
        # a body answered 500. orjson writes them as null, and the answer is the usual 422.
        return json_response({"detail": jsonable_encoder(exc.errors())}, 422)

    @app.exception_handler(ParamError)
    async def _param_error(_request: Request, exc: ParamError) -> Response:
        detail = [{"loc": [exc.location, exc.field], "msg": exc.message, "type": "value_error"}]
        return json_response({"detail": detail}, 422)

    @app.exception_handler(BackendUnavailableError)
    async def _backend_error(_request: Request, exc: BackendUnavailableError) -> Response:
        return error_response(
            503, f"{exc.backend} is unavailable: {exc.message}", backend=exc.backend
        )

    @app.exception_handler(ReplayRefusedError)
    async def _replay_refused(_request: Request, exc: ReplayRefusedError) -> Response:
        if exc.status == 422 and exc.field:
            detail = [{"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}]
            return json_response({"detail": detail}, 422)
        return error_response(exc.status, exc.message)


def _serve_ui(app: FastAPI, settings: Settings) -> None:
    ui = _ui_dir(settings)
    if ui is not None:
        app.mount("/", StaticFiles(directory=ui, html=True), name="ui")
        return

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return json_response({"name": "mbo-pipeline API", "docs": "/docs"})


def _ui_dir(settings: Settings) -> Path | None:
    candidates = (
        [settings.api.ui_dir] if settings.api.ui_dir else [REPO / "ui" / "dist", REPO / "ui"]
    )
    for candidate in candidates:
        if candidate is not None and (candidate / "index.html").is_file():
            return candidate
    return None
