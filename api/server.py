"""How the API is served: one uvicorn configuration for `mbo api` and the tests.

uvloop (libuv event loop) and httptools (llhttp parser) are uvicorn's fast stack: together they
take a third off the per-request cost of the asyncio loop and the pure-Python h11 parser. They
are project dependencies and selected explicitly; where one cannot be imported (a platform
without wheels) the server falls back to asyncio / h11 instead of failing to start.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import FrameType
from typing import Any, Final

import uvicorn

from mbo_core.shutdown import arm_stop_deadline

#: The WebSocket implementation (sans-I/O websockets: flow-controlled sends, see api.feeds).
WS_PROTOCOL: Final = "websockets-sansio"


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def loop_and_http() -> tuple[str, str]:
    """uvicorn's `loop` and `http` settings: uvloop/httptools when available."""
    loop = "uvloop" if _importable("uvloop") else "asyncio"
    http = "httptools" if _importable("httptools") else "h11"
    return loop, http


def uvicorn_config(app: Any, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """The API's uvicorn configuration (`overrides` win over these defaults)."""
    loop, http = loop_and_http()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": loop,
        "http": http,
        "ws": WS_PROTOCOL,
        "lifespan": "on",
        "access_log": False,
        "log_config": None,  # keep the logging mbo_core.logs set up
        # Within mbo_core.shutdown.STOP_DEADLINE_S, which ends the process regardless.
        "timeout_graceful_shutdown": 3,
        **overrides,
    }
    return uvicorn.Config(app, **options)


class Server(uvicorn.Server):
    """uvicorn's server, exiting 0 after a graceful shutdown on SIGINT/SIGTERM.

    uvicorn re-raises the signal once it has shut down, so the process ends "killed by SIGTERM"
    (status 143) even when everything closed cleanly; the other stages exit 0 then, and
    supervisors read 143 as a crash.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # The sink it may host waits on Kafka and ClickHouse: never longer than the deadline.
        arm_stop_deadline()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()
