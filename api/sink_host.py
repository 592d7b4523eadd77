"""The ClickHouse sink inside the API process (`mbo api --with-sink`): chDB allows one process
per data directory, so with a chdb:// store the sink and the API share one engine and client.
The sink's runner comes from the composition root (`mbo api` passes sink.app.run_sink): a stage
never imports another."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from clickhouse_connect.driver.client import Client
from fastapi import FastAPI

from api.store import Store
from mbo_core.settings import Settings

log = logging.getLogger("api")


class SinkRunner(Protocol):
    """sink.app.run_sink: consume the topics into ClickHouse on `client` until `stop` is set."""

    def __call__(
        self, settings: Settings, *, stop: asyncio.Event, client: Client | None = None
    ) -> Awaitable[Any]: ...


class LockedClient:
    """A ClickHouse client whose calls take one lock: the sink and the API share one chDB
    engine in one process, and its client is not known to be safe across threads."""

    def __init__(self, client: Client, lock: threading.Lock) -> None:
        self._client = client
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if not callable(value):
            return value
        lock = self._lock

        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return value(*args, **kwargs)

        return locked

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._client, name, value)


async def run_sink_in_process(
    app: FastAPI, sink: SinkRunner, settings: Settings, store: Store, stop: asyncio.Event
) -> None:
    """The ClickHouse sink in this process, on the API's client (behind the API's lock), on an
    event loop of its own in a thread.

    On the API's loop, the sink decoded each fetch (hundreds of messages) in one go and every
    request waited behind it; in its own thread it gives the GIL back to the API's loop every
    switch interval (SWITCH_INTERVAL_S) instead.
    """
    try:
        client = await asyncio.to_thread(store.shared_client)
        locked = cast(Client, LockedClient(client, store.lock))
        await on_own_loop(lambda own_stop: sink(settings, stop=own_stop, client=locked),
                           stop, name="sink")  # fmt: skip
    except Exception as exc:
        app.state.sink_error = str(exc) or type(exc).__name__
        log.exception("the sink stopped")
        # A supervisor (mbo run) restarts a process whose sink died; the API alone cannot.
        on_failure = getattr(app.state, "on_sink_failure", None)
        if on_failure is not None:
            on_failure()
        raise


async def on_own_loop(
    main: Callable[[asyncio.Event], Awaitable[Any]], stop: asyncio.Event, *, name: str
) -> None:
    """Run main(own_stop) on a new event loop in a thread of its own until it returns; `stop`
    (an event of the calling loop) sets own_stop. main's exception is raised here."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = (
        concurrent.futures.Future()
    )

    def report(error: BaseException | None) -> None:
        if not done.done():
            done.set_result(None) if error is None else done.set_exception(error)

    async def own_main() -> None:
        own_stop = asyncio.Event()
        started.set_result((asyncio.get_running_loop(), own_stop))
        await main(own_stop)

    def run() -> None:
        try:
            asyncio.run(own_main())
        except BaseException as exc:  # handed to the awaiting loop, which raises it
            error: BaseException | None = exc
        else:
            error = None
        with contextlib.suppress(RuntimeError):  # the calling loop is closed: nobody waits
            loop.call_soon_threadsafe(report, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    stopping = asyncio.ensure_future(stop.wait())
    try:
        waiting: set[asyncio.Future[Any]] = {done, stopping}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            begun = asyncio.wrap_future(started)
            waiting = {done, begun}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if begun.done():
                own_loop, own_stop = begun.result()
                with contextlib.suppress(RuntimeError):  # its loop has just ended
                    own_loop.call_soon_threadsafe(own_stop.set)
        await done
    finally:
        stopping.cancel()
