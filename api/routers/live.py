"""Live feeds of one book: Server-Sent Events and a WebSocket (api.feeds conflates them).

Their messages are api.models' LiveSnapshot, LiveUpdate and LiveError, documented with the close
codes in docs/asyncapi.yaml (OpenAPI has no WebSockets)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, HTTPException, WebSocket
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketDisconnect

from api.dependencies import AppSettings, Live, authorized, live_key, require_token
from api.fastpath import DEFAULT_DEPTH
from api.feeds import feed, sse_stream
from api.models import WS_CLOSE_CODES, WS_NOT_NUMBERS, WS_OUT_OF_RANGE, WS_TOKEN, LiveError
from api.params import MAX_DEPTH, DepthQuery, InstrumentId, MaxHzQuery, PublisherQuery
from api.responses import errors
from mbo_core.metrics import API_WEBSOCKET_CLIENTS

router = APIRouter(prefix="/v1", responses=errors(400, 401, 404, 422))

_SSE_EXAMPLE = (
    'event: snapshot\ndata: {"type":"snapshot","book":{...},"bbo":{...}}\n\n'
    'event: update\ndata: {"type":"update","book":{...},"bbo":{...}}\n\n'
)


@router.get(
    "/instruments/{instrument_id}/events",
    summary="Live feed as Server-Sent Events",
    dependencies=[Depends(require_token)],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "An endless stream: `event: snapshot` first, then `event: update` "
            "at most max_hz a second, each with `data:` one JSON message (LiveSnapshot, "
            "LiveUpdate: docs/asyncapi.yaml, the same messages as the WebSocket "
            "`/v1/instruments/{instrument_id}/live`).",
            "content": {
                "text/event-stream": {"schema": {"type": "string"}, "example": _SSE_EXAMPLE}
            },
        }
    },
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
        problem = LiveError(type="error", status=401, detail=WS_TOKEN)
    elif isinstance(params, str):
        problem = LiveError(type="error", status=422, detail=params)
    else:
        instrument, hz_asked, levels, publisher = params
        try:
            key = live_key(state, instrument, publisher)
        except HTTPException as exc:
            problem = LiveError(type="error", status=404, detail=exc.detail)
    if problem is not None:
        # A text frame, as every message (a browser hands a binary frame over as a Blob).
        await websocket.send_text(problem.model_dump_json())
        await websocket.close(WS_CLOSE_CODES[problem.status])
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
    try:
        hz = float(max_hz)
        publisher = None if publisher_id in (None, "") else int(publisher_id)
        instrument, levels = int(instrument_id), int(depth)
    except ValueError:
        return WS_NOT_NUMBERS
    if not math.isfinite(hz):
        return WS_NOT_NUMBERS
    if not (0 < hz <= 1000 and 1 <= levels <= MAX_DEPTH):
        return WS_OUT_OF_RANGE
    return instrument, hz, levels, publisher


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until it disconnects."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
