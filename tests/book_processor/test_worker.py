"""book_processor.worker: Faust's worker as the processor runs it."""

from __future__ import annotations

import asyncio

import pytest
import setproctitle

from book_processor.worker import Worker


def test_the_worker_keeps_the_process_title() -> None:
    # Faust retitles its process `[Faust:Worker] -init- <app id>` at start and stop; the
    # processor keeps `python -m mbo_cli.main process --worker-index N ...`, which `ps` and
    # bench.pipeline read.
    before = setproctitle.getproctitle()
    Worker._setproctitle(object.__new__(Worker), "init")
    assert setproctitle.getproctitle() == before


def test_the_worker_closes_its_loop_without_mode_s_last_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mode's worker slept 1 s in its sentinel task before closing the loop: every worker stop
    (a run's end, a restart) took a second longer than the shutdown."""
    slept: list[float] = []
    sleep = asyncio.sleep

    async def recorded(seconds: float) -> None:
        slept.append(seconds)
        await sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recorded)
    asyncio.run(Worker._sentinel_task(object.__new__(Worker)))
    assert slept and max(slept) == 0
