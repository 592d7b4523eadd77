"""`mbo process`: one book-processor worker (a Faust worker in the processor consumer group)."""

from __future__ import annotations

from typing import Annotated

import typer


def process(
    worker_index: Annotated[
        int,
        typer.Option(
            "--worker-index",
            min=0,
            help="This worker's number: its /metrics port is the processor port + this.",
        ),
    ] = 0,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", min=0, help="/metrics port (0: off).")
    ] = None,
) -> None:
    """Rebuild the books of the records topic and publish BBO changes and snapshots."""
    from book_processor.worker import run_worker  # noqa: PLC0415 (Faust and numba load slowly)
    from mbo_core.settings import load_settings  # noqa: PLC0415

    run_worker(load_settings(), worker_index=worker_index, metrics_port=metrics_port)
