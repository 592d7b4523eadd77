"""mbo_core.heap: the heap is frozen out of collections, and thawed and collected now and then."""

from __future__ import annotations

import asyncio
import gc
import weakref

from mbo_core.heap import freeze_heap, keep_frozen


class _Node:
    other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    node = _Node()
    node.other = node
    return weakref.ref(node)


def test_freeze_heap_collects_garbage_before_freezing() -> None:
    try:
        gc.unfreeze()
        ref = _cycle()
        freeze_heap()
        assert ref() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_frozen_garbage_waits_for_the_thaw() -> None:
    async def run() -> None:
        stop = asyncio.Event()
        gc.unfreeze()
        node = _Node()
        node.other = node
        ref = weakref.ref(node)
        task = asyncio.create_task(keep_frozen(stop, freeze_every_s=0.01, thaw_every_s=0.3))
        await asyncio.sleep(0.1)
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert ref() is not None  # frozen: out of every collection...
        await asyncio.sleep(0.4)
        assert ref() is None  # ...until the thaw collects the whole heap once
        stop.set()
        await asyncio.wait_for(task, 1)

    try:
        asyncio.run(run())
    finally:
        gc.unfreeze()
