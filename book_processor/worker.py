"""Running one processor worker: topics first, then the Faust worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging

import faust

from book_processor.app import create_app, warm_up
from mbo_core.heap import freeze_heap
from mbo_core.kafka.clients import watch_kafka_reachable
from mbo_core.kafka.topics import ensure_topics
from mbo_core.logs import configure_logging, logging_config
from mbo_core.metrics import serve_metrics
from mbo_core.settings import Settings
from mbo_core.shutdown import arm_stop_deadline

log = logging.getLogger("book_processor")


class Worker(faust.Worker):
    """Faust's worker (named alike: its log lines say `[^Worker]`), ending itself
    STOP_DEADLINE_S after SIGTERM/SIGINT (mbo_core.shutdown): its shutdown commits, flushes and
    leaves the group, each of which waits for the broker."""

    def _on_sigint(self) -> None:
        arm_stop_deadline()
        super()._on_sigint()

    def _on_sigterm(self) -> None:
        arm_stop_deadline()
        super()._on_sigterm()

    async def _sentinel_task(self) -> None:
        """The last task mode's worker runs before it closes its event loop, once every service
        and future has been gathered: mode sleeps 1 s there, so every stop of a worker (the end
        of `mbo run`, a restart, a scale-down) took a second longer than its shutdown. A few
        passes of the loop still run what the stopping services scheduled last (transports
        closing)."""
        for _ in range(3):
            await asyncio.sleep(0)

    def _setproctitle(self, info: str, *, ident: str = "") -> None:
        """Keep the process title `mbo process --worker-index N ...` (Faust would replace it
        with `[Faust:Worker] -init- <app id>`, the same for every worker, once setproctitle is
        installed, as mbo_cli.forkserver has it)."""


def run_worker(
    settings: Settings, *, worker_index: int = 0, metrics_port: int | None = None
) -> None:
    """Run worker `worker_index` (its /metrics port is the processor port + index) until stopped."""
    configure_logging(settings.log, f"processor-{worker_index}")
    asyncio.run(ensure_topics(settings))
    port = settings.metrics.processor_port + worker_index if metrics_port is None else metrics_port
    serve_metrics(settings.metrics.host, port)
    watch_kafka_reachable(settings, "processor")
    warm_up()
    app = create_app(settings)
    freeze_heap()  # the start-up heap (Faust, aiokafka, numba) is never walked again
    # A fresh loop for Faust: asyncio.run above closed the one it made.
    asyncio.set_event_loop(asyncio.new_event_loop())
    worker = Worker(
        app,
        loglevel=settings.log.level.lower(),
        quiet=True,
        logging_config=logging_config(settings.log, f"processor-{worker_index}"),
    )
    log.info("processor worker %d starting", worker_index, extra={"metrics_port": port})
    worker.execute_from_commandline()
