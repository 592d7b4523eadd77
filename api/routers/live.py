"""Live feeds of one book: Server-Sent Events and a WebSocket (api.feeds conflates them)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Depends, HTTPException, WebSocket
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketDisconnect

from api.dependencies import AppSettings, Live, authorized, live_key, require_token
from api.fastpath import DEFAULT_DEPTH
from api.feeds import feed, sse_stream
from api.params import MAX_DEPTH, DepthQuery, InstrumentId, MaxHzQuery, PublisherQuery
from api.responses import errors
from mbo_core.metrics import API_WEBSOCKET_CLIENTS

router = APIRouter(prefix="/v1", responses=errors(400, 401, 404, 422))


@router.get(
    "/instruments/{instrument_id}/events",
    summary="Live feed as Server-Sent Events",
    dependencies=[Depends(require_token)],
)
async def events(
    state: Live,
    settings: AppSettings,
    instrument_id: InstrumentId,
    max_hz: MaxHzQuery = 10,
    depth: DepthQuery = DEFAULT_DEPTH,
    publisher_id: PublisherQuery = None,
) -> StreamingResponse:
    key = live_key(state, instrument_id, publisher_id)
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


@router.websocket("/instruments/{instrument_id}/live")
async def live(
    websocket: WebSocket,
    state: Live,
    settings: AppSettings,
    instrument_id: str,
    max_hz: str = "10",
    depth: str = "10",
    publisher_id: str | None = None,
) -> None:
    # Errors go as a message and a close code (4401, 4422, 4404): a browser's WebSocket never
    # sees the HTTP status of a refused upgrade. So the parameters are parsed here, not by
    # FastAPI, whose refusal of `?max_hz=abc` closes the handshake with a bare HTTP 403.
    await websocket.accept()
    problem = None
    params = _ws_params(instrument_id, max_hz, depth, publisher_id)
    if not authorized(websocket):
        problem = (4401, {"status": 401, "detail": "missing or wrong bearer token"})
    elif isinstance(params, str):
        problem = (4422, {"status": 422, "detail": params})
    else:
        instrument, hz_asked, levels, publisher = params
        try:
            key = live_key(state, instrument, publisher)
        except HTTPException as exc:
            problem = (4404, {"status": 404, "detail": exc.detail})
    if problem is not None:
        code, body = problem
        await websocket.send_bytes(orjson.dumps({"type": "error", **body}))
        await websocket.close(code)
        return
    hz = min(hz_asked, settings.api.ws_max_hz)
    clients = API_WEBSOCKET_CLIENTS.labels(kind="websocket")
    clients.inc()

    async def send(payload: bytes) -> None:
        await websocket.send_text(payload.decode())

    sender = asyncio.create_task(feed(state, key, levels, hz, send, "websocket"))
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


def _ws_params(
    instrument_id: str, max_hz: str, depth: str, publisher_id: str | None
) -> tuple[int, float, int, int | None] | str:
    """The WebSocket's parameters as (instrument, max_hz, depth, publisher), or what is wrong
    with them."""
    not_numbers = "instrument_id, depth and publisher_id must be integers and max_hz a number"
    try:
        hz = float(max_hz)
        publisher = None if publisher_id in (None, "") else int(publisher_id)
        instrument, levels = int(instrument_id), int(depth)
    except ValueError:
        return not_numbers
    if not math.isfinite(hz):
        return not_numbers
    if not (0 < hz <= 1000 and 1 <= levels <= MAX_DEPTH):
        return f"max_hz must be in (0, 1000] and depth in [1, {MAX_DEPTH}]"
    return instrument, hz, levels, publisher


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until it disconnects."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
