"""Child processes of `mbo run`: start, watch, restart, stop, and where they write their logs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mbo_core.errors import MboError

log = logging.getLogger("mbo.run")


def mbo_command(*args: str) -> list[str]:
    """The command line of `mbo ARGS...` run by this Python (no console script needed)."""
    return [sys.executable, "-m", "mbo_cli.main", *args]


@dataclass
class Child:
    """One supervised stage process."""

    name: str
    args: list[str]
    restart: bool  # restart when it dies unexpectedly (stages that recover their state)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    log_path: Path | None = None
    finished: bool = False  # exited 0 on its own (e.g. the producer at the end of the file)


@dataclass
class Supervisor:
    """Runs `mbo <stage> ...` children with a shared environment and restarts the ones that may.

    Their pids are kept in `<run_dir>/processes.json` (read by people and by the restart tests).
    """

    run_dir: Path
    env: dict[str, str]
    max_restarts: int = 5
    children: dict[str, Child] = field(default_factory=dict)

    def start(self, name: str, args: list[str], *, restart: bool) -> Child:
        child = Child(name=name, args=args, restart=restart)
        self.children[name] = child
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        child.log_path = logs / f"{child.name}.log"
        out = child.log_path.open("ab")
        try:
            child.process = subprocess.Popen(
                mbo_command(*child.args),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches `mbo run`, which stops children in order
            )
        finally:
            out.close()
        log.info("started %s (pid %d): mbo %s", child.name, child.process.pid, " ".join(child.args))
        self._write_pids()

    def check(self) -> None:
        """Restart children that died and may be restarted; MboError for one that may not."""
        for child in self.children.values():
            process = child.process
            if process is None or child.finished:
                continue
            code = process.poll()
            if code is None:
                continue
            if code == 0 and not child.restart:
                child.finished = True
                continue
            if not child.restart or child.restarts >= self.max_restarts:
                raise MboError(
                    f"{child.name} exited with code {code}; see {child.log_path}"
                    + (f" (restarted {child.restarts} times)" if child.restarts else "")
                )
            child.restarts += 1
            log.warning("%s exited with code %d: restarting (%d)", child.name, code, child.restarts)
            self._spawn(child)

    def stop(self, name: str, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        child = self.children.get(name)
        if child is None or child.process is None:
            return None
        process = child.process
        child.restart = False
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s: killing it", name, timeout)
                process.kill()
                process.wait()
        child.finished = True
        return process.returncode

    def stop_all(self) -> None:
        for name in reversed(list(self.children)):
            self.stop(name)
        self._write_pids()

    def pid(self, name: str) -> int | None:
        child = self.children.get(name)
        return child.process.pid if child and child.process else None

    def _write_pids(self) -> None:
        pids = {
            name: child.process.pid
            for name, child in self.children.items()
            if child.process is not None and child.process.poll() is None
        }
        path = self.run_dir / "processes.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"supervisor": os.getpid(), "children": pids}))
        tmp.replace(path)
