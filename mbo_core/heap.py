"""Keeping the cyclic garbage collector's pauses out of latency (the API's requests, the book
processor's events).

A full (generation 2) collection walks every tracked object and stops every thread meanwhile.
In `mbo api --with-sink` serving 1000 WebSocket clients during a replay, such collections ran
every ~6 s and took 133-221 ms each (gc.callbacks, measured), most of them collecting nothing:
the time went into walking long-lived objects (the start-up heap, the clients' connections,
the live state). They were the REST latency's p99. In the book processor, full collections of
its start-up heap (Faust, aiokafka, numba) took 25-108 ms.

So the heap is frozen (gc.freeze: out of every later scan) at start-up and then every
FREEZE_EVERY_S, and full collections only walk what was allocated since the last freeze.
Cyclic garbage that was alive at a freeze is not collected until the heap is thawed: every
THAW_EVERY_S the whole heap is collected once (one pause of the old length) and frozen again,
which bounds that memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

log = logging.getLogger("mbo_core.heap")

FREEZE_EVERY_S = 1.0
THAW_EVERY_S = 300.0


def freeze_heap(*, generation: int = 1) -> int:
    """Collect the young generations, then freeze what is left; returns how many objects were
    collected.

    Collected first, so that no new garbage is frozen with the heap. Only up to `generation`
    (1 by default): at a stage's start a full collection walked the whole start-up heap (~150k
    objects, 0.08-0.2 CPU-s in the processor and in the API) to find a handful of objects; what
    little garbage the old generation holds waits for the next thaw."""
    collected = gc.collect(generation)
    gc.freeze()
    return collected


def thaw_and_collect() -> tuple[int, float]:
    """Unfreeze, collect everything once, freeze again: (objects collected, seconds)."""
    started = time.perf_counter()
    gc.unfreeze()
    collected = freeze_heap(generation=2)
    return collected, time.perf_counter() - started


class HeapSchedule:
    """When to freeze and when to thaw: call tick() every freeze_every_s."""

    def __init__(self, thaw_every_s: float = THAW_EVERY_S) -> None:
        self.thaw_every_s = thaw_every_s
        self.next_thaw = time.monotonic() + thaw_every_s

    def tick(self) -> None:
        if time.monotonic() >= self.next_thaw:
            collected, seconds = thaw_and_collect()
            log.info("full garbage collection: %d objects in %.0f ms", collected, seconds * 1000)
            self.next_thaw = time.monotonic() + self.thaw_every_s
        else:
            gc.freeze()


async def keep_frozen(
    stop: asyncio.Event,
    *,
    freeze_every_s: float = FREEZE_EVERY_S,
    thaw_every_s: float = THAW_EVERY_S,
) -> None:
    """Until `stop` is set: freeze the heap every freeze_every_s, thaw and collect it all every
    thaw_every_s."""
    schedule = HeapSchedule(thaw_every_s)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), freeze_every_s)
        schedule.tick()
