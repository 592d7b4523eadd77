"""The sink's host in the API process: on_own_loop runs a coroutine on an event loop of its
own, in a thread, until the caller's stop event; its error reaches the caller."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from api.sink_host import on_own_loop


def test_own_loop_runs_main_on_its_own_thread_until_stop() -> None:
    seen: dict[str, Any] = {}

    async def main(own_stop: asyncio.Event) -> None:
        seen["thread"] = threading.get_ident()
        await own_stop.wait()
        seen["stopped"] = True

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(on_own_loop(main, stop, name="own"))
        await asyncio.sleep(0.1)
        assert not task.done()
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert seen["thread"] != threading.get_ident() and seen["stopped"]


def test_own_loop_raises_the_error_of_main() -> None:
    async def main(own_stop: asyncio.Event) -> None:
        raise RuntimeError("the sink broke")

    async def scenario() -> None:
        await asyncio.wait_for(on_own_loop(main, asyncio.Event(), name="own"), 5)

    with pytest.raises(RuntimeError, match="the sink broke"):
        asyncio.run(scenario())
