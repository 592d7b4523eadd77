"""Live feeds (WebSocket and SSE): one snapshot on subscribe, then conflated updates.

Each client has its own loop: wait until its book changed, send the CURRENT state, then rest
for 1/max_hz. Nothing is queued per client: a slow client's send blocks only its own loop, and
when it returns the client gets whatever is newest, so its memory stays flat and the others
never wait for it. Payloads are shared across clients (LiveState.payload).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from api.state import Key, LiveState
from mbo_core.metrics import API_LIVE_MESSAGES


async def feed(
    state: LiveState,
    key: Key,
    depth: int,
    max_hz: float,
    send: Callable[[bytes], Awaitable[None]],
    kind: str,
) -> None:
    """Send the snapshot, then updates at most max_hz per second, until cancelled."""
    interval = 1.0 / max_hz
    messages = API_LIVE_MESSAGES.labels(kind=kind)
    version, payload = state.payload(key, depth, "snapshot")
    await send(payload)
    messages.inc()
    while True:
        sent_at = time.monotonic()
        # Wait for a change of this book (other books of the instrument wake us too).
        while state.version(key) == version:
            await state.changed_event(key[0]).wait()
        rest = interval - (time.monotonic() - sent_at)
        if rest > 0:
            await asyncio.sleep(rest)  # changes meanwhile are conflated into the next send
        version, payload = state.payload(key, depth, "update")
        await send(payload)
        messages.inc()


async def sse_stream(state: LiveState, key: Key, depth: int, max_hz: float) -> AsyncIterator[bytes]:
    """The same feed as Server-Sent Events: `event: snapshot|update` + `data: <json>`."""
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)

    async def send(payload: bytes) -> None:
        # maxsize 1 and the producer awaits put: at most one message waits for a slow reader.
        await queue.put(payload)

    task = asyncio.create_task(feed(state, key, depth, max_hz, send, "sse"))
    try:
        first = True
        while True:
            get = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                task.result()  # re-raise what ended the feed
                return
            event = "snapshot" if first else "update"
            first = False
            yield b"event: " + event.encode() + b"\ndata: " + get.result() + b"\n\n"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
