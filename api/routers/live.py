"""Live feeds of one book: Server-Sent Events and a WebSocket (api.feeds conflates them)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Depends, HTTPException, WebSocket
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketDisconnect

from api.dependencies import AppSettings, Live, authorized, live_key, require_token
from api.fastpath import DEFAULT_DEPTH
from api.feeds import feed, sse_stream
from api.params import MAX_DEPTH, DepthQuery, InstrumentId, MaxHzQuery, PublisherQuery
from mbo_core.metrics import API_WEBSOCKET_CLIENTS

router = APIRouter(prefix="/v1")


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
    instrument_id: int,
    max_hz: float = 10,
    depth: int = 10,
    publisher_id: int | None = None,
) -> None:
    # Errors go as a message and a close code (4401, 4422, 4404): a browser's WebSocket never
    # sees the HTTP status of a refused upgrade.
    await websocket.accept()
    problem = None
    if not authorized(websocket):
        problem = (4401, {"status": 401, "detail": "missing or wrong bearer token"})
    elif not (0 < max_hz <= 1000 and 1 <= depth <= MAX_DEPTH):
        problem = (4422, {"status": 422, "detail": "max_hz must be in (0, 1000] and depth "
                          f"in [1, {MAX_DEPTH}]"})  # fmt: skip
    else:
        try:
            key = live_key(state, instrument_id, publisher_id)
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


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until it disconnects."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
