"""The HTTP API (FastAPI): live books from memory, history from ClickHouse, replay control.

Routes (all JSON; /v1 ones need `Authorization: Bearer <MBO_API__TOKEN>` when a token is set,
or `?token=` for WebSocket/SSE, which browsers cannot give headers): see docs/api.md and the
OpenAPI page at /docs. The common valid GET of the latest book or BBO is answered by
api.fastpath in front of FastAPI, from the same cached encoding the routes below serve.
Errors: 404 unknown instrument/publisher/book, 422 bad parameter (the field named in
`detail[].loc`), 503 backend down (`backend`: kafka or clickhouse), 401 missing or wrong token.
User input never produces a 500.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, cast

import orjson
from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from api import history
from api.auth import bearer, token_matches
from api.fastpath import DEFAULT_DEPTH, MAX_INSTRUMENT, MAX_PUBLISHER, FastPath
from api.history import BackendUnavailableError, Store
from api.live import feed, sse_stream
from api.params import ParamError, parse_bucket, parse_ts
from api.replay import ReplayController, ReplayRefusedError
from api.state import Key, LiveState, consume_live
from mbo_core.heap import freeze_heap, keep_frozen
from mbo_core.metrics import API_REQUEST_SECONDS, API_WEBSOCKET_CLIENTS
from mbo_core.settings import Settings
from mbo_core.storage.queries import mid_bars

log = logging.getLogger("api")

REPO = Path(__file__).resolve().parents[1]
#: Readiness probes must answer quickly even when a backend hangs.
PROBE_TIMEOUT_S = 3.0
MAX_DEPTH = 1000
MAX_ROWS = 100_000
#: How long a worker thread running Python (the in-process sink's inserts, ClickHouse reads
#: through asyncio.to_thread) may keep the GIL when the event loop wants it back. With CPython's
#: 5 ms the loop could wait that long at every blocking call while such a thread ran: with the
#: sink busy, the latest-book GET at 2,000/s went from p50 6.8 / p99 262 ms to 4.6 / 45 ms.
SWITCH_INTERVAL_S = 0.0005

InstrumentId = Annotated[int, Field(ge=0, le=MAX_INSTRUMENT)]
PublisherQuery = Annotated[
    int | None,
    Query(ge=0, le=MAX_PUBLISHER, description="Publisher id; omitted: the consolidated book if the "
          "instrument has several publishers, else its only one."),
]  # fmt: skip
DepthQuery = Annotated[int, Query(ge=1, le=MAX_DEPTH, description="Levels per side.")]
MaxHzQuery = Annotated[
    float, Query(gt=0, le=1000, description="Most updates per second (capped by the server).")
]


class ReplayRequest(BaseModel):
    file: str = Field(min_length=1, max_length=4096, description="File in the replay directory.")
    rate: float | None = Field(default=None, gt=0, le=1e9, description="Records per second.")
    speed: float | None = Field(default=None, gt=0, le=1e6, description="x recorded time.")
    loop: int = Field(default=1, ge=1, le=1000, description="Copies of the file to replay.")


class LockedClient:
    """A ClickHouse client whose calls take one lock: the sink and the API share one chDB
    engine in one process, and its client is not known to be safe across threads."""

    def __init__(self, client: Client, lock: threading.Lock) -> None:
        self._client = client
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if not callable(value):
            return value
        lock = self._lock

        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return value(*args, **kwargs)

        return locked

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._client, name, value)


class _Metrics:
    """ASGI middleware: API_REQUEST_SECONDS per route template (not raw path: bounded labels)."""

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


class _Api(FastAPI):
    """FastAPI with the latest-book/BBO fast path (api.fastpath) in front of its whole stack:
    the fast path answers the common valid request, anything else goes through FastAPI."""

    fast_path: FastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast_path
        if fast is not None and scope["type"] == "http" and await fast(scope, send):
            return
        await super().__call__(scope, receive, send)


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"detail": message, **extra}, status)


def create_app(
    settings: Settings,
    *,
    clickhouse: Client | None = None,
    with_sink: bool = False,
    consume: bool = True,
) -> FastAPI:
    """The API app. clickhouse: an open client to use (else one is opened on demand);
    with_sink: also run the ClickHouse sink in this process on the same client (chDB allows
    one process per data directory); consume: follow the live topics (tests may turn it off)."""
    state = LiveState()
    store = Store(settings, clickhouse)
    replay = ReplayController(settings)
    token = settings.api.token.get_secret_value() if settings.api.token else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("event loop: %s", type(asyncio.get_running_loop()).__module__)
        freeze_heap()
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        if consume:
            tasks.append(asyncio.create_task(consume_live(settings, state, stop), name="live"))
        if with_sink:
            tasks.append(asyncio.create_task(_run_sink(app, settings, store, stop), name="sink"))
        tasks.append(asyncio.create_task(keep_frozen(stop), name="heap"))
        try:
            yield
        finally:
            stop.set()
            await replay.close()
            for task in tasks:
                try:
                    await asyncio.wait_for(task, 30)
                except TimeoutError:
                    task.cancel()
                except Exception:
                    log.exception("background task %s failed", task.get_name())
            store.close()
            sys.setswitchinterval(switch_interval)

    app = _Api(
        title="mbo-pipeline API",
        version="1",
        description="Exact limit order books rebuilt from Databento MBO data: live from Kafka, "
        "history from ClickHouse, replay control. See docs/api.md.",
        lifespan=lifespan,
    )
    app.state.live = state
    app.state.store = store
    app.state.replay = replay
    app.state.sink_error = None
    app.add_middleware(_Metrics)
    origins = settings.api.cors_origin_list()
    app.fast_path = app.state.fast_path = FastPath(
        state, token=token, cors=bool(origins), max_depth=MAX_DEPTH
    )
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(ParamError)
    async def _param_error(_request: Request, exc: ParamError) -> Response:
        detail = [{"loc": [exc.location, exc.field], "msg": exc.message, "type": "value_error"}]
        return _json({"detail": detail}, 422)

    @app.exception_handler(BackendUnavailableError)
    async def _backend_error(_request: Request, exc: BackendUnavailableError) -> Response:
        return _error(503, f"{exc.backend} is unavailable: {exc.message}", backend=exc.backend)

    @app.exception_handler(ReplayRefusedError)
    async def _replay_refused(_request: Request, exc: ReplayRefusedError) -> Response:
        if exc.status == 422 and exc.field:
            detail = [{"loc": ["body", exc.field], "msg": exc.message, "type": "value_error"}]
            return _json({"detail": detail}, 422)
        return _error(exc.status, exc.message)

    def authorized(connection: HTTPConnection) -> bool:
        if token is None:
            return True
        given = bearer(connection.headers.get("authorization", ""))
        if given is None:
            given = connection.query_params.get("token", "")
        return token_matches(given, token.encode())

    async def require_token(request: Request) -> None:
        if not authorized(request):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    def live_key(instrument_id: int, publisher_id: int | None) -> Key:
        if not state.has_instrument(instrument_id):
            raise HTTPException(404, f"unknown instrument {instrument_id}")
        key = state.resolve(instrument_id, publisher_id)
        if key is None:
            raise HTTPException(404, f"instrument {instrument_id} has no publisher {publisher_id}")
        return key

    async def history_publisher(instrument_id: int, publisher_id: int | None) -> int:
        publishers = await history.publishers_of(store, instrument_id)
        if not publishers:
            raise HTTPException(404, f"unknown instrument {instrument_id} (nothing in ClickHouse)")
        if publisher_id is None:
            chosen = history.default_publisher(publishers)
            assert chosen is not None
            return chosen
        if publisher_id not in publishers or publisher_id == 0:
            raise HTTPException(404, f"instrument {instrument_id} has no publisher {publisher_id}")
        return publisher_id

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])

    @v1.get("/instruments", summary="Instruments seen on the live topics")
    async def instruments() -> Response:
        return _json([state.summary(i) for i in state.instrument_ids()])

    @v1.get("/instruments/{instrument_id}/book", summary="Latest book (newest snapshot)")
    async def latest_book(
        instrument_id: InstrumentId,
        depth: DepthQuery = DEFAULT_DEPTH,
        publisher_id: PublisherQuery = None,
    ) -> Response:
        # The common case never gets here: api.fastpath answers it from the same cache.
        book = state.book_json(live_key(instrument_id, publisher_id), depth)
        if book is None:
            raise HTTPException(404, f"no book yet for instrument {instrument_id}")
        return Response(book, media_type="application/json")

    @v1.get("/instruments/{instrument_id}/bbo", summary="Latest best bid and offer")
    async def latest_bbo(
        instrument_id: InstrumentId, publisher_id: PublisherQuery = None
    ) -> Response:
        bbo = state.bbo_json(live_key(instrument_id, publisher_id))
        if bbo is None:
            raise HTTPException(404, f"no BBO yet for instrument {instrument_id}")
        return Response(bbo, media_type="application/json")

    @v1.get("/instruments/{instrument_id}/book/at", summary="Book as of a time (ClickHouse)")
    async def book_at(
        instrument_id: InstrumentId,
        ts: Annotated[str, Query(max_length=64, description="ns since the epoch or ISO-8601.")],
        depth: DepthQuery = DEFAULT_DEPTH,
        publisher_id: PublisherQuery = None,
    ) -> Response:
        at_ns = parse_ts(ts, "ts")
        publisher = await history_publisher(instrument_id, publisher_id)
        book = await history.book_at(store, instrument_id, at_ns, depth, publisher)
        if book is None:
            raise HTTPException(404, f"no snapshot of instrument {instrument_id} at or before {ts}")
        return _json(book)

    @v1.get("/instruments/{instrument_id}/bbo/history", summary="BBO changes or bars (ClickHouse)")
    async def bbo_history(
        instrument_id: InstrumentId,
        start: Annotated[str, Query(max_length=64, description="Start (inclusive), ns or ISO.")],
        end: Annotated[str, Query(max_length=64, description="End (exclusive), ns or ISO.")],
        bucket: Annotated[
            str | None, Query(max_length=16, description="Bar width, e.g. 1s, 1m; omitted: rows.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_ROWS, description="Most rows/bars.")] = 10_000,
        publisher_id: PublisherQuery = None,
    ) -> Response:
        start_ns, end_ns = parse_ts(start, "start"), parse_ts(end, "end")
        if end_ns < start_ns:
            raise ParamError("end", "end must not be before start")
        step_ns = None if bucket is None else parse_bucket(bucket)
        publisher = await history_publisher(instrument_id, publisher_id)
        if step_ns is None:
            query = history.bbo_rows_query(instrument_id, publisher, start_ns, end_ns, limit)
            return _json({"rows": [history.bbo_from_row(r) for r in await store.rows(query)]})
        query = mid_bars(
            instrument_id, start_ns, end_ns, step_ns=step_ns, publisher_id=publisher, limit=limit
        )
        return _json({"bars": [history.bar_from_row(r) for r in await store.rows(query)]})

    @v1.get("/instruments/{instrument_id}/events", summary="Live feed as Server-Sent Events")
    async def events(
        instrument_id: InstrumentId,
        max_hz: MaxHzQuery = 10,
        depth: DepthQuery = DEFAULT_DEPTH,
        publisher_id: PublisherQuery = None,
    ) -> StreamingResponse:
        key = live_key(instrument_id, publisher_id)
        hz = min(max_hz, settings.api.ws_max_hz)

        async def stream() -> AsyncIterator[bytes]:
            clients = API_WEBSOCKET_CLIENTS.labels(kind="sse")
            clients.inc()
            try:
                async for chunk in sse_stream(state, key, depth, hz):
                    yield chunk
            finally:
                clients.dec()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @v1.get("/replay", summary="Replay status")
    async def replay_status() -> Response:
        return _json(replay.status())

    @v1.get("/replay/files", summary="Files the replay may use")
    async def replay_files() -> Response:
        return _json({"directory": str(replay.directory) if replay.directory else None,
                      "files": replay.files()})  # fmt: skip

    @v1.post("/replay", summary="Start a replay (returns the running one's status if active)")
    async def replay_start(request: Annotated[ReplayRequest, Body()]) -> Response:
        started, status = await replay.start(
            request.file, request.rate, request.speed, request.loop
        )
        return _json(status, 202 if started else 200)

    @v1.post("/replay/pause", summary="Pause the replay")
    async def replay_pause() -> Response:
        return _json(replay.pause())

    @v1.post("/replay/resume", summary="Resume the replay")
    async def replay_resume() -> Response:
        return _json(replay.resume())

    @v1.post("/replay/stop", summary="Stop the replay")
    async def replay_stop() -> Response:
        return _json(await replay.stop())

    app.include_router(v1)

    @app.websocket("/v1/instruments/{instrument_id}/live")
    async def live(
        websocket: WebSocket,
        instrument_id: int,
        max_hz: float = 10,
        depth: int = 10,
        publisher_id: int | None = None,
    ) -> None:
        await websocket.accept()
        problem = None
        if not authorized(websocket):
            problem = (4401, {"status": 401, "detail": "missing or wrong bearer token"})
        elif not (0 < max_hz <= 1000 and 1 <= depth <= MAX_DEPTH):
            problem = (4422, {"status": 422, "detail": "max_hz must be in (0, 1000] and depth "
                              f"in [1, {MAX_DEPTH}]"})  # fmt: skip
        else:
            try:
                key = live_key(instrument_id, publisher_id)
            except HTTPException as exc:
                problem = (4404, {"status": 404, "detail": exc.detail})
        if problem is not None:
            code, body = problem
            await websocket.send_bytes(orjson.dumps({"type": "error", **body}))
            await websocket.close(code)
            return
        hz = min(max_hz, settings.api.ws_max_hz)
        clients = API_WEBSOCKET_CLIENTS.labels(kind="websocket")
        clients.inc()

        async def send(payload: bytes) -> None:
            await websocket.send_text(payload.decode())

        sender = asyncio.create_task(feed(state, key, depth, hz, send, "websocket"))
        receiver = asyncio.create_task(_drain(websocket))
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            clients.dec()
            for task in (sender, receiver):
                task.cancel()
            for task in (sender, receiver):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    @app.get("/healthz", summary="Process alive")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get("/readyz", summary="Kafka and ClickHouse reachable")
    async def readyz() -> Response:
        down: dict[str, str] = {}
        kafka, clickhouse = await asyncio.gather(
            _probe(lambda: _kafka_probe(settings)), _probe(store.ping)
        )
        if kafka:
            down["kafka"] = kafka
        if clickhouse:
            down["clickhouse"] = clickhouse
        if app.state.sink_error:
            down["sink"] = app.state.sink_error
        if down:
            return _json(
                {"status": "unavailable", "unavailable": sorted(down), "errors": down}, 503
            )
        return _json({"status": "ready", "live_caught_up": state.caught_up.is_set()})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    ui = _ui_dir(settings)
    if ui is not None:
        app.mount("/", StaticFiles(directory=ui, html=True), name="ui")
    else:

        @app.get("/", include_in_schema=False)
        async def index() -> Response:
            return _json({"name": "mbo-pipeline API", "docs": "/docs"})

    return app


def _ui_dir(settings: Settings) -> Path | None:
    candidates = (
        [settings.api.ui_dir] if settings.api.ui_dir else [REPO / "ui" / "dist", REPO / "ui"]
    )
    for candidate in candidates:
        if candidate is not None and (candidate / "index.html").is_file():
            return candidate
    return None


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until it disconnects."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return


async def _probe(check: Callable[[], Any]) -> str | None:
    try:
        await asyncio.wait_for(check(), PROBE_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    except BackendUnavailableError as exc:
        return exc.message
    except Exception as exc:  # any failure to reach the backend is "not ready"
        return " ".join(str(exc).split())[:300] or type(exc).__name__
    return None


async def _kafka_probe(settings: Settings) -> None:
    from mbo_core.kafka.clients import make_admin  # noqa: PLC0415

    admin = make_admin(settings, "api-ready")
    try:
        await admin.start()
        await admin.list_topics()
    finally:
        await admin.close()


async def _run_sink(app: FastAPI, settings: Settings, store: Store, stop: asyncio.Event) -> None:
    """The ClickHouse sink in this process, on the API's client (behind the API's lock), on an
    event loop of its own in a thread.

    On the API's loop, the sink decoded each fetch (hundreds of messages) in one go and every
    request waited behind it; in its own thread it gives the GIL back to the API's loop every
    switch interval (SWITCH_INTERVAL_S) instead.
    """
    from sink.app import run_sink  # noqa: PLC0415

    try:
        client = await asyncio.to_thread(store.shared_client)
        locked = cast(Client, LockedClient(client, store.lock))
        await _on_own_loop(lambda own_stop: run_sink(settings, stop=own_stop, client=locked),
                           stop, name="sink")  # fmt: skip
    except Exception as exc:
        app.state.sink_error = str(exc) or type(exc).__name__
        log.exception("the sink stopped")
        # A supervisor (mbo run) restarts a process whose sink died; the API alone cannot.
        on_failure = getattr(app.state, "on_sink_failure", None)
        if on_failure is not None:
            on_failure()
        raise


async def _on_own_loop(
    main: Callable[[asyncio.Event], Awaitable[Any]], stop: asyncio.Event, *, name: str
) -> None:
    """Run main(own_stop) on a new event loop in a thread of its own until it returns; `stop`
    (an event of the calling loop) sets own_stop. main's exception is raised here."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = (
        concurrent.futures.Future()
    )

    def report(error: BaseException | None) -> None:
        if not done.done():
            done.set_result(None) if error is None else done.set_exception(error)

    async def own_main() -> None:
        own_stop = asyncio.Event()
        started.set_result((asyncio.get_running_loop(), own_stop))
        await main(own_stop)

    def run() -> None:
        try:
            asyncio.run(own_main())
        except BaseException as exc:  # handed to the awaiting loop, which raises it
            error: BaseException | None = exc
        else:
            error = None
        with contextlib.suppress(RuntimeError):  # the calling loop is closed: nobody waits
            loop.call_soon_threadsafe(report, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    stopping = asyncio.ensure_future(stop.wait())
    try:
        waiting: set[asyncio.Future[Any]] = {done, stopping}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            begun = asyncio.wrap_future(started)
            waiting = {done, begun}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if begun.done():
                own_loop, own_stop = begun.result()
                with contextlib.suppress(RuntimeError):  # its loop has just ended
                    own_loop.call_soon_threadsafe(own_stop.set)
        await done
    finally:
        stopping.cancel()
