"""Stopping a stage on SIGINT/SIGTERM: the first signal asks, a second one insists, and a
stage still there STOP_DEADLINE_S after the first ends itself.

The deadline is what makes SIGTERM honoured whatever the broker does: a stage whose broker is
away can wait for a commit, a flush or a group leave far longer (aiokafka's request timeout is
40 s). Ending it then loses nothing: what it had not committed is read again by whoever takes
its partitions, and the sink's keys and the processor's rebuilds make the copies collapse.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("mbo.shutdown")

#: Longest a stage takes to stop after SIGTERM/SIGINT, broker or no broker (a supervisor such
#: as Kubernetes or `mbo run` waits 5 s or more before SIGKILL).
STOP_DEADLINE_S = 4.5
#: The exit code of a stage that had to end itself at the deadline.
EXIT_STOP_DEADLINE = 3
_armed = threading.Event()


def arm_stop_deadline(seconds: float = STOP_DEADLINE_S) -> None:
    """End this process `seconds` from now unless it exited by then (once; later calls do
    nothing). Runs on a daemon thread: a blocked event loop cannot hold it up."""
    if _armed.is_set():
        return
    _armed.set()

    def expire() -> None:
        log.error(
            "still stopping %.1f s after the signal (broker or ClickHouse unreachable?): "
            "exiting now; what was not committed is read again after a restart",
            seconds,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_STOP_DEADLINE)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def run_until_signalled(
    work: Callable[[asyncio.Event], Awaitable[T]],
    *,
    on_first_signal: Callable[[signal.Signals], None] | None = None,
) -> T:
    """Run `work(stop)` in a new event loop.

    The first SIGINT or SIGTERM sets `stop`, so the work can finish what it holds and return;
    a second one cancels it and raises KeyboardInterrupt.
    """

    async def main() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        signals = (signal.SIGINT, signal.SIGTERM)

        def on_signal(signum: signal.Signals) -> None:
            arm_stop_deadline()
            if not stop.is_set():
                if on_first_signal is not None:
                    on_first_signal(signum)
                stop.set()
            elif task is not None:
                task.cancel()

        for signum in signals:
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await work(stop)
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)

    return asyncio.run(main())
