"""`mbo sink`: load the records, bbo and snapshots topics into ClickHouse (docs/storage.md)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from mbo_core.errors import InputError, MboError

if TYPE_CHECKING:
    from mbo_core.settings import Settings
    from sink.app import SinkSummary


def sink(
    idle_exit: Annotated[
        float | None,
        typer.Option(
            "--idle-exit",
            help="Stop after this many seconds without a message (default: run until stopped).",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve Prometheus /metrics on this port (0: off; default MBO_METRICS__SINK_PORT).",
        ),
    ] = None,
) -> None:
    """Consume the records, bbo and snapshots topics into ClickHouse, committing offsets only
    after their rows are inserted. SIGINT/SIGTERM stop it cleanly (final insert and commit)."""
    if idle_exit is not None and idle_exit <= 0:
        raise InputError(f"--idle-exit must be a positive number of seconds, not {idle_exit}")
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise InputError(f"--metrics-port must be 0 (off) or a port number, not {metrics_port}")
    # Heavy imports (aiokafka, clickhouse-connect, chDB) only when this command runs.
    from mbo_core.logs import configure_logging  # noqa: PLC0415
    from mbo_core.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    configure_logging(settings.log, "sink")
    _serve_metrics(settings, settings.metrics.sink_port if metrics_port is None else metrics_port)
    summary = run_until_signalled(settings, idle_exit)
    print(f"mbo {summary.line()}", file=sys.stderr)


def _serve_metrics(settings: Settings, port: int) -> None:
    from mbo_core.metrics import serve_metrics  # noqa: PLC0415

    host = settings.metrics.host
    try:
        serve_metrics(host, port)
    except OSError as exc:
        raise MboError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    if port:
        from mbo_core.kafka.clients import watch_kafka_reachable  # noqa: PLC0415

        watch_kafka_reachable(settings, "sink")


def run_until_signalled(settings: Settings, idle_exit: float | None) -> SinkSummary:
    """run_sink in its own event loop; the first SIGINT/SIGTERM stops it cleanly, a second one
    abandons the final insert (its messages stay uncommitted) and raises KeyboardInterrupt."""
    from mbo_core.shutdown import run_until_signalled as run  # noqa: PLC0415
    from sink.app import run_sink  # noqa: PLC0415

    return run(lambda stop: run_sink(settings, stop=stop, idle_exit_s=idle_exit))
