"""A real pipeline for the API tests: the API (with the sink in-process, as `mbo run` does with
chDB) served by uvicorn on a loopback port in a thread, and a `mbo process` worker subprocess,
on the session's broker and ClickHouse with this module's own topics and database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.server import uvicorn_config
from mbo_core.kafka.probes import free_port
from mbo_core.settings import Settings
from producer.app import produce_file
from tests.paths import MBO

HOST = "127.0.0.1"


@dataclass
class Served:
    settings: Settings
    app: FastAPI
    base: str
    port: int
    server: uvicorn.Server

    @property
    def ws(self) -> str:
        return f"ws://{HOST}:{self.port}"


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess the same settings."""
    topics = settings.topics
    env = {
        **os.environ,
        "MBO_DATA_DIR": str(settings.data_dir),
        "MBO_KAFKA__BOOTSTRAP_SERVERS": str(settings.kafka.bootstrap_servers),
        "MBO_KAFKA__PROCESSOR_GROUP_ID": settings.kafka.processor_group_id,
        "MBO_KAFKA__SINK_GROUP_ID": settings.kafka.sink_group_id,
        "MBO_TOPICS__RECORDS__NAME": topics.records.name,
        "MBO_TOPICS__BBO__NAME": topics.bbo.name,
        "MBO_TOPICS__SNAPSHOTS__NAME": topics.snapshots.name,
        "MBO_TOPICS__DEAD_LETTER__NAME": topics.dead_letter.name,
    }
    if not settings.clickhouse_url.startswith("chdb:"):
        env["MBO_CLICKHOUSE__URL"] = settings.clickhouse_url
    return env


@contextlib.contextmanager
def processor(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = (settings.data_dir / "processor.log").open("wb")
    proc = subprocess.Popen(
        [MBO, "process", "--metrics-port", "0"],
        env=settings_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def serve(app: FastAPI, settings: Settings, **uvicorn_options: Any) -> Iterator[Served]:
    """uvicorn serving `app` on a free loopback port in a thread of this process, configured as
    `mbo api` serves it (uvloop, httptools, sans-I/O WebSockets) plus `uvicorn_options`."""
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, HOST, port, **uvicorn_options))
    # uvicorn only takes signals in the main thread (pytest's): this one stops by should_exit.
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 60, "uvicorn did not start")
    try:
        yield Served(settings, app, f"http://{HOST}:{port}", port, server)
    finally:
        server.should_exit = True
        thread.join(60)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.1)


def app_for(settings: Settings, **kwargs: Any) -> FastAPI:
    kwargs.setdefault("file_replay", produce_file)
    return create_app(settings, **kwargs)


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)
