"""`mbo api`: the HTTP API and web UI (uvicorn), optionally with the ClickHouse sink in-process.

`--with-sink` runs the sink in the same process on the API's ClickHouse client: with chDB only
one process may open the data directory, so that is how `mbo run` serves a chdb:// store.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mbo_core.errors import MboError

if TYPE_CHECKING:
    from api.sink_host import SinkRunner


def api(
    with_sink: Annotated[
        bool,
        typer.Option("--with-sink", help="Also run the ClickHouse sink in this process."),
    ] = False,
    host: Annotated[
        str | None, typer.Option("--host", help="Bind address (default MBO_API__HOST).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Port (default MBO_API__PORT)."),
    ] = None,
) -> None:
    """Serve the API (/v1, /docs, /metrics) and the web UI until SIGINT/SIGTERM."""
    # Heavy imports only when this command runs.
    from api.app import create_app  # noqa: PLC0415
    from api.server import Server, uvicorn_config  # noqa: PLC0415
    from mbo_core.logs import configure_logging  # noqa: PLC0415
    from mbo_core.settings import load_settings  # noqa: PLC0415
    from producer.app import produce_file  # noqa: PLC0415

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = load_settings()
    if overrides:
        # Keyword groups replace the environment's group: merge the two by hand.
        settings = load_settings(api={**settings.api.model_dump(), **overrides})
    configure_logging(settings.log, "api")
    client = None
    if with_sink:
        from mbo_core.storage.clickhouse import connect  # noqa: PLC0415

        client = connect(settings)  # fails now, with one line, if chDB's directory is taken
    try:
        # The composition root: the API gets the producer's file replay for its replay control
        # and, with --with-sink, the sink's runner (a stage never imports another).
        sink: SinkRunner | None = None
        if with_sink:
            from sink.app import run_sink  # noqa: PLC0415

            sink = run_sink
        app = create_app(settings, clickhouse=client, sink=sink, file_replay=produce_file)
        server = Server(uvicorn_config(app, settings.api.host, settings.api.port))

        def on_sink_failure() -> None:
            server.should_exit = True

        app.state.on_sink_failure = on_sink_failure
        print(
            f"mbo api: serving http://{settings.api.host}:{settings.api.port}/ "
            f"(API docs at /docs){' with the sink' if with_sink else ''}",
            file=sys.stderr,
        )
        server.run()
    finally:
        if client is not None:
            client.close()
    if app.state.sink_error:
        raise MboError(f"the sink stopped: {app.state.sink_error}")
