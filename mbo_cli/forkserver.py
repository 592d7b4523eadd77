"""The fork server of `mbo run`: one process imports what every stage imports, then forks the
stages from itself.

Each stage used to be a fresh `python -m mbo_cli.main <stage>`, and each paid ~0.6 CPU-s
importing numpy, pydantic, aiokafka, typer, prometheus-client and mbo_core's shared modules
before its own work (docs/pipeline.md, "Start-up"). The fork server pays that once; a stage forked
from it starts with those modules loaded and imports only its own (Faust and numba, FastAPI
and chDB, ...), which are not loaded here: nothing that starts threads or opens files at import.

Protocol (pipes to `mbo run`): one JSON line per stage, `{"args": [...], "env": {...}, "log":
path}`; the answer is `{"pid": N}` or `{"error": "..."}`. The server forks twice and the middle
process exits at once, so the stage is not the server's child: Linux gives an orphan to its
nearest ancestor that is a child subreaper, which `mbo run` made itself (`become_subreaper`), so
`mbo run` waits for its stages and reads their exit codes as it would for `subprocess.Popen`'s
(`ForkedProcess`). The server ends when `mbo run` closes its pipe (or dies).

In the stage: a new session, stdin from /dev/null, stdout and stderr appended to its log, the
environment given, its process title the command line it would have had (`ps` shows `python -m
mbo_cli.main process ...`), then `mbo_cli.main.main()`, exiting as that command does.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

#: What every stage imports (and `mbo run` does not need to have loaded in the stages): none of
#: them starts a thread, opens a file or reads the MBO_* settings at import.
PRELOAD = (
    "asyncio",
    "numpy",
    "orjson",
    "pydantic",
    "pydantic_settings",
    "prometheus_client",
    "aiokafka",
    "uvloop",
    "typer",
    "mbo_core.settings",
    "mbo_core.logs",
    "mbo_core.metrics",
    "mbo_core.kafka.clients",
    "mbo_core.wire",
)

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False if it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def stage_command(args: list[str]) -> list[str]:
    """The command line of a stage, as `subprocess.Popen` would have run it."""
    return [sys.executable, "-m", "mbo_cli.main", *args]


class ForkedProcess:
    """A stage forked by the fork server and re-parented to this process: the part of
    `subprocess.Popen`'s interface the supervisor uses (pid, returncode, poll, wait,
    send_signal, kill)."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone, its code unknown
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(0.01)
        return code

    def send_signal(self, sig: int) -> None:
        # Until it is reaped here its pid cannot be reused, so this never hits another process.
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """`mbo run`'s side: the server process and the pipes to it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @classmethod
    def start(cls, log_path: Path) -> ForkServer | None:
        """The server, started with this process's environment; None where stages cannot be
        forked from it (not Linux, or no child subreaper): they are then started as commands."""
        if not become_subreaper():
            return None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "mbo_cli.forkserver"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches `mbo run`, not the server
            )
        return cls(process)

    def spawn(self, args: list[str], env: dict[str, str], log_path: Path) -> ForkedProcess:
        """Fork `mbo ARGS...` with `env`, its output appended to `log_path`; OSError if the
        server is gone or refused."""
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None or self.process.poll() is not None:
            raise OSError("the fork server is not running")
        request = {"args": args, "env": env, "log": str(log_path)}
        stdin.write(json.dumps(request).encode() + b"\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise OSError(f"the fork server exited with code {self.process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        if "pid" not in answer:
            raise OSError(f"the fork server could not start mbo {args[0]}: {answer.get('error')}")
        return ForkedProcess(int(answer["pid"]), stage_command(args))

    def close(self) -> None:
        """End the server (its stages go on until stopped)."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def serve(commands: IO[bytes], answers: IO[bytes]) -> dict[str, Any] | None:
    """Fork a stage per request line. Returns the request in the stage (which then runs it),
    None in the server once `commands` ends."""
    for line in commands:
        request: dict[str, Any] = json.loads(line)
        try:
            stage = _fork_orphan()
        except OSError as exc:
            answers.write(json.dumps({"error": str(exc)}).encode() + b"\n")
            answers.flush()
            continue
        if stage == 0:
            return request
        answers.write(json.dumps({"pid": stage}).encode() + b"\n")
        answers.flush()
    return None


def _fork_orphan() -> int:
    """Fork a process whose parent exits at once: 0 in it, its pid in the caller."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(read_end)
        stage = os.fork()
        if stage == 0:
            os.close(write_end)
            return 0
        os.write(write_end, str(stage).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        told = pipe.read()
    os.waitpid(middle, 0)
    if not told:
        raise OSError("the stage's fork failed")
    return int(told)


def _become_stage(request: dict[str, Any]) -> None:
    """In the forked stage: the session, descriptors, environment and title it would have had
    as `subprocess.Popen(stage_command(args), start_new_session=True, ...)`."""
    import setproctitle  # noqa: PLC0415

    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    os.environ.clear()
    os.environ.update(request["env"])
    args: list[str] = request["args"]
    setproctitle.setproctitle(" ".join(stage_command(args)))
    import mbo_cli.main  # noqa: PLC0415

    sys.argv = [str(mbo_cli.main.__file__), *args]


def main() -> None:
    for module in PRELOAD:
        importlib.import_module(module)
    import setproctitle  # noqa: PLC0415

    # Its first call finds the memory of argv and environ; made in a stage after the environ
    # was replaced, it fails silently (the title stays the server's). So once here.
    setproctitle.getproctitle()
    request = serve(sys.stdin.buffer, sys.stdout.buffer)
    if request is None:
        return  # `mbo run` closed the pipe
    _become_stage(request)
    from mbo_cli.main import main as mbo  # noqa: PLC0415

    mbo()


if __name__ == "__main__":
    main()
