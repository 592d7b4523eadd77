"""The supervisor of `mbo run`'s children: restarts with backoff, gives up on a crash loop."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mbo_cli import supervisor as supervisor_module
from mbo_cli.supervisor import Supervisor
from mbo_core.errors import MboError


def test_a_stage_that_keeps_dying_is_restarted_with_backoff_then_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "BACKOFF_FIRST_S", 0.2)
    supervisor = Supervisor(run_dir=tmp_path, env=dict(os.environ), max_restarts=2)
    # An unknown command: `mbo` exits 2 at once, every time.
    child = supervisor.start("looping", ["no-such-stage"], restart=True)
    delays: list[float] = []  # from noticing a death to its scheduled restart
    deadline = time.monotonic() + 60
    with pytest.raises(
        MboError, match=r"looping keeps dying: exited with code 2, 3 times within 60 s"
    ):
        while time.monotonic() < deadline:
            scheduled = child.restart_at
            supervisor.check()
            if child.restart_at is not None and child.restart_at != scheduled:
                delays.append(child.restart_at - time.monotonic())
            time.sleep(0.02)
    assert child.restarts == 2
    # The backoff doubles: 0.2 s, then 0.4 s.
    assert len(delays) == 2
    assert 0.15 < delays[0] <= 0.2 and 0.35 < delays[1] <= 0.4
    assert "no-such-stage" in (tmp_path / "logs" / "looping.log").read_text()


def test_a_stage_that_may_not_restart_ends_the_run(tmp_path: Path) -> None:
    supervisor = Supervisor(run_dir=tmp_path, env=dict(os.environ))
    supervisor.start("producer", ["no-such-stage"], restart=False)
    deadline = time.monotonic() + 30
    with pytest.raises(MboError, match=r"producer exited with code 2; see .*producer\.log"):
        while time.monotonic() < deadline:
            supervisor.check()
            time.sleep(0.05)
