"""book_processor.worker: Faust's worker as the processor runs it."""

from __future__ import annotations

import setproctitle

from book_processor.worker import Worker


def test_the_worker_keeps_the_process_title() -> None:
    # Faust retitles its process `[Faust:Worker] -init- <app id>` at start and stop; the
    # processor keeps `python -m mbo_cli.main process --worker-index N ...`, which `ps` and
    # bench.pipeline read.
    before = setproctitle.getproctitle()
    Worker._setproctitle(object.__new__(Worker), "init")
    assert setproctitle.getproctitle() == before
