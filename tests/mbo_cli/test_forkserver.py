"""mbo_cli.forkserver: stages forked from one process that imported the shared modules, each
with its own session, log, environment, title and exit code, reaped by their supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mbo_cli.forkserver import ForkServer
from mbo_cli.supervisor import Supervisor


@pytest.fixture
def forkserver(tmp_path: Path) -> Iterator[ForkServer]:
    server = ForkServer.start(tmp_path / "forkserver.log")
    assert server is not None  # Linux: this process became a child subreaper
    yield server
    server.close()


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def test_a_stage_exits_with_its_code_and_writes_its_log(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    log = tmp_path / "stage.log"
    stage = forkserver.spawn(["no-such-stage"], dict(os.environ), log)
    assert stage.wait(60) == 2  # as `python -m mbo_cli.main no-such-stage` exits
    assert "No such command 'no-such-stage'" in log.read_text()


def test_a_stage_reads_the_environment_it_was_given(forkserver: ForkServer, tmp_path: Path) -> None:
    # Not the server's: the settings refuse a variable they do not know.
    env = {**os.environ, "MBO_FORK_TEST_MARK": "42"}
    log = tmp_path / "stage.log"
    stage = forkserver.spawn(["sql", "SELECT 1", "--data-dir", str(tmp_path)], env, log)
    assert stage.wait(60) == 2
    assert "unknown variable MBO_FORK_TEST_MARK" in log.read_text()


def test_a_stage_is_ours_in_its_own_session_with_its_title(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    out = tmp_path / "big.dbn.zst"
    stage = forkserver.spawn(
        ["generate", "--records", "20000000", "-o", str(out)], dict(os.environ),
        tmp_path / "stage.log",
    )  # fmt: skip
    try:
        fields = _stat(stage.pid)
        ppid, session = int(fields[1]), int(fields[3])
        assert ppid == os.getpid() and session == stage.pid

        def title() -> str:
            return Path(f"/proc/{stage.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()

        deadline = time.monotonic() + 10  # set once forked, just after the pid is answered
        while "mbo_cli.forkserver" in title() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "-m mbo_cli.main generate --records 20000000" in title()
        assert stage.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            stage.wait(0.05)
    finally:
        stage.send_signal(signal.SIGKILL)
    assert stage.wait(30) == -signal.SIGKILL
    stage.send_signal(signal.SIGTERM)  # reaped: a no-op, never another process's pid


def test_the_supervisor_starts_commands_once_the_server_is_gone(
    forkserver: ForkServer, tmp_path: Path
) -> None:
    supervisor = Supervisor(run_dir=tmp_path, env=dict(os.environ), forkserver=forkserver)
    forked = supervisor.start("first", ["no-such-stage"], restart=False)
    assert not isinstance(forked.process, subprocess.Popen)
    forkserver.process.kill()
    forkserver.process.wait()
    second = supervisor.start("second", ["no-such-stage"], restart=False)
    assert isinstance(second.process, subprocess.Popen) and supervisor.forkserver is None
    assert forked.process is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and None in (forked.process.poll(), second.process.poll()):
        time.sleep(0.05)
    assert (forked.process.returncode, second.process.returncode) == (2, 2)
