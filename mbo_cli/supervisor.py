"""Child processes of `mbo run`: start, watch, restart, stop, and where they write their logs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mbo_cli.forkserver import ForkServer, stage_command
from mbo_core.errors import MboError

if TYPE_CHECKING:
    from mbo_core.kafka.broker import LocalBroker

log = logging.getLogger("mbo.run")

#: A stage that dies is started again after this, doubling while it keeps dying, up to the max.
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 15.0
#: How long a stage may take to stop after SIGTERM before it is killed (stages end themselves
#: after mbo_core.shutdown.STOP_DEADLINE_S; this is the backstop).
STOP_TIMEOUT_S = 8.0
#: The window of a crash loop: more than max_restarts deaths of one process within it and the
#: run gives up on it; its backoff doubles with each death still in the window.
CRASH_WINDOW_S = 60.0


def _last_error(log_path: Path | None) -> str | None:
    """The last `mbo: error: ...` line of a child's log, without the prefix."""
    if log_path is None or not log_path.exists():
        return None
    with log_path.open("rb") as f:
        f.seek(max(f.seek(0, os.SEEK_END) - 8192, 0))
        tail = f.read().decode(errors="replace").splitlines()
    errors = [line for line in tail if line.startswith("mbo: error: ")]
    return errors[-1].removeprefix("mbo: error: ") if errors else None


def mbo_command(*args: str) -> list[str]:
    """The command line of `mbo ARGS...` run by this Python (no console script needed)."""
    return stage_command(list(args))


class StageProcess(Protocol):
    """A stage's process: a `subprocess.Popen`, or a `ForkedProcess` from the fork server."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


@dataclass
class Child:
    """One supervised stage process."""

    name: str
    args: list[str]
    restart: bool  # restart when it dies unexpectedly (stages that recover their state)
    one_shot: bool = False  # its work ends: exit 0 means done (the producer), not a death
    #: Exit codes after which it is not restarted: the work cannot go on (bad input mid-way).
    final_codes: frozenset[int] = frozenset()
    #: Why it ended for good with one of final_codes: its log's last error line.
    error: str | None = None
    process: StageProcess | None = None
    restarts: int = 0
    log_path: Path | None = None
    finished: bool = False  # exited 0 on its own (e.g. the producer at the end of the file)
    deaths: list[float] = field(default_factory=list)  # monotonic, within CRASH_WINDOW_S
    restart_at: float | None = None  # monotonic time of the restart scheduled after a death


@dataclass
class Supervisor:
    """Runs `mbo <stage> ...` children with a shared environment and restarts the ones that may,
    and the run's local broker when it has one.

    A stage that dies is restarted after a backoff (BACKOFF_FIRST_S, doubling to BACKOFF_MAX_S
    with each of its deaths in the last CRASH_WINDOW_S); once it died more than max_restarts
    times within that window (a crash loop) the run gives up with an error naming it and its
    log.

    Their pids (the broker's too) are kept in `<run_dir>/processes.json` (read by people and by
    the restart tests).
    """

    run_dir: Path
    env: dict[str, str]
    broker: LocalBroker | None = None
    #: Forks the stages (mbo_cli.forkserver; its owner closes it); without one, or once it is
    #: gone, they are started as commands.
    forkserver: ForkServer | None = None
    max_restarts: int = 5
    children: dict[str, Child] = field(default_factory=dict)
    _broker_deaths: list[float] = field(default_factory=list)

    def start(
        self,
        name: str,
        args: list[str],
        *,
        restart: bool,
        one_shot: bool = False,
        final_codes: frozenset[int] = frozenset(),
    ) -> Child:
        child = Child(name=name, args=args, restart=restart, one_shot=one_shot,
                      final_codes=final_codes)  # fmt: skip
        self.children[name] = child
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        child.log_path = log_path = logs / f"{child.name}.log"
        child.restart_at = None
        child.process = self._forked(child, log_path) or self._command(child, log_path)
        log.info("started %s (pid %d): mbo %s", child.name, child.process.pid, " ".join(child.args))
        self._write_pids()

    def _forked(self, child: Child, log_path: Path) -> StageProcess | None:
        if self.forkserver is None:
            return None
        try:
            return self.forkserver.spawn(child.args, self.env, log_path)
        except OSError as exc:
            log.warning("%s: starting stages as commands from now on", exc)
            self.forkserver = None
            return None

    def _command(self, child: Child, log_path: Path) -> StageProcess:
        with log_path.open("ab") as out:
            return subprocess.Popen(
                mbo_command(*child.args),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches `mbo run`, which stops children in order
            )

    def check(self) -> bool:
        """Restart what died and may be restarted; MboError for one that may not.

        The broker first (the stages need it); True if it was restarted. A broker that died
        more than max_restarts times within CRASH_WINDOW_S, or cannot start again, ends the run.
        """
        restarted_broker = self._check_broker()
        now = time.monotonic()
        for child in self.children.values():
            process = child.process
            if process is None or child.finished:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self._spawn(child)
                continue
            code = process.poll()
            if code is None:
                continue
            if code == 0 and (child.one_shot or not child.restart):
                child.finished = True
                continue
            if code in child.final_codes:
                child.finished = True
                child.error = _last_error(child.log_path) or f"exited with code {code}"
                log.error("%s stopped for good: %s", child.name, child.error)
                continue
            self._schedule_restart(child, code, now)
        return restarted_broker

    def _schedule_restart(self, child: Child, code: int, now: float) -> None:
        """After a death: a restart after the backoff, or MboError if it may not restart or
        keeps dying."""
        if not child.restart:
            raise MboError(f"{child.name} exited with code {code}; see {child.log_path}")
        deaths = self._count_death(child.name, code, child.deaths, child.restarts, child.log_path)
        delay = min(BACKOFF_FIRST_S * 2 ** (deaths - 1), BACKOFF_MAX_S)
        child.restart_at = now + delay
        log.warning(
            "%s exited with code %d: restarting in %.1f s (%d deaths in %.0f s)",
            child.name,
            code,
            delay,
            deaths,
            CRASH_WINDOW_S,
        )

    def _count_death(
        self, name: str, code: int, deaths: list[float], restarts: int, log_path: Path | None
    ) -> int:
        """Record a death in `deaths` (kept to the last CRASH_WINDOW_S); how many there are now.
        MboError once they are more than max_restarts: a crash loop."""
        now = time.monotonic()
        deaths[:] = [t for t in deaths if now - t < CRASH_WINDOW_S] + [now]
        if len(deaths) > self.max_restarts:
            raise MboError(
                f"{name} keeps dying: exited with code {code}, {len(deaths)} times within "
                f"{CRASH_WINDOW_S:.0f} s ({restarts} restarts); giving up, see {log_path}"
            )
        return len(deaths)

    def _check_broker(self) -> bool:
        broker = self.broker
        if broker is None:
            return False
        code = broker.exit_code()
        if code is None:
            return False
        # Like a stage: the run gives up on a broker that keeps dying (a crash loop), not on
        # one killed now and then over a long run.
        self._count_death(
            "the local broker", code, self._broker_deaths, broker.restarts,
            Path(broker.state.log_file),
        )  # fmt: skip
        broker.restart_if_exited()
        self._write_pids()
        return True

    def restarts(self) -> dict[str, int]:
        """Restarts per child, and the broker's when the run has its own."""
        counts = {name: child.restarts for name, child in self.children.items()}
        if self.broker is not None:
            counts["broker"] = self.broker.restarts
        return counts

    def stop(self, name: str, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        self._stop([name], timeout)
        child = self.children.get(name)
        return None if child is None or child.process is None else child.process.returncode

    def stop_all(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Every child at once, downstream first in the signal order: each stage ends itself
        within mbo_core.shutdown.STOP_DEADLINE_S, so this takes seconds, not a sum of waits."""
        self._stop(list(reversed(self.children)), timeout)
        self._write_pids()

    def _stop(self, names: list[str], timeout: float) -> None:
        running: list[tuple[str, StageProcess]] = []
        for name in names:
            child = self.children.get(name)
            if child is None or child.process is None:
                continue
            child.restart = False
            child.restart_at = None
            child.finished = True
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
                running.append((name, child.process))
        deadline = time.monotonic() + timeout
        for name, process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s: killing it", name, timeout)
                process.kill()
                process.wait()

    def pid(self, name: str) -> int | None:
        child = self.children.get(name)
        return child.process.pid if child and child.process else None

    def _write_pids(self) -> None:
        pids = {
            name: child.process.pid
            for name, child in self.children.items()
            if child.process is not None and child.process.poll() is None
        }
        record: dict[str, object] = {"supervisor": os.getpid(), "children": pids}
        if self.broker is not None and self.broker.pid is not None:
            record["broker"] = self.broker.pid
        path = self.run_dir / "processes.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)
