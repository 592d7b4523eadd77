"""Stopping a stage cleanly on SIGINT/SIGTERM: the first signal asks, a second one insists."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


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
