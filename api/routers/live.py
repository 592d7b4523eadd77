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
    numbers = _ws_numbers(instrument_id, max_hz, depth, publisher_id)
    if not authorized(websocket):
        problem = (4401, {"status": 401, "detail": "missing or wrong bearer token"})
    elif numbers is None:
        problem = (4422, {"status": 422, "detail": "instrument_id, depth and publisher_id must "
                          "be integers and max_hz a number"})  # fmt: skip
    elif not (0 < numbers[1] <= 1000 and 1 <= numbers[2] <= MAX_DEPTH):
        problem = (4422, {"status": 422, "detail": "max_hz must be in (0, 1000] and depth "
                          f"in [1, {MAX_DEPTH}]"})  # fmt: skip
    else:
        instrument, hz_asked, levels, publisher = numbers
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
    depth_levels = levels
    clients = API_WEBSOCKET_CLIENTS.labels(kind="websocket")
    clients.inc()

    async def send(payload: bytes) -> None:
        await websocket.send_text(payload.decode())

    sender = asyncio.create_task(feed(state, key, depth_levels, hz, send, "websocket"))
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


def _ws_numbers(
    instrument_id: str, max_hz: str, depth: str, publisher_id: str | None
) -> tuple[int, float, int, int | None] | None:
    """The WebSocket's parameters as numbers; None if one is not a (finite) number."""
    try:
        hz = float(max_hz)
        if not math.isfinite(hz):
            return None
        publisher = None if publisher_id in (None, "") else int(publisher_id)
        return int(instrument_id), hz, int(depth), publisher
    except ValueError:
        return None


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until it disconnects."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
