"""Replay control: the API's start/pause/resume/stop of one file replay at a time, run as an
asyncio task inside the API process.

The replay itself (a DBN file into the records topic) is the producer's: `mbo api` hands its
`produce_file` in as a FileReplay, since a stage never imports another (docs/architecture.md).
Without one, replay control is off. States: idle (never started), running, paused, finished,
stopped (by a client), failed (the error says why). Starting while running or paused returns the
current status and starts nothing (idempotent: a retried POST cannot start two replays). Files
are resolved inside the configured replay directory (MBO_API__REPLAY_DIR); anything outside it is
refused, so a client can never make the API read an arbitrary file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from mbo_core.errors import InputError, MboError
from mbo_core.replay_lock import ReplayBusyError, check_replay_lock, replay_holder
from mbo_core.settings import Settings

log = logging.getLogger("api.replay_control")

State = Literal["idle", "running", "paused", "finished", "stopped", "failed"]
DBN_SUFFIXES = (".dbn", ".dbn.zst")
#: Subdirectory levels of the replay directory listed (a data dir below it is not walked whole).
FILES_DEPTH = 3


class ReplaySummary(Protocol):
    """What replay control reads from the end of a replay (producer.app.ProduceSummary)."""

    @property
    def records_read(self) -> int: ...

    @property
    def interrupted(self) -> bool: ...


class FileReplay(Protocol):
    """A replay of the DBN file at `path` into the records topic, as producer.app.produce_file:
    `progress(n)` after each n records taken, `stop` ends it early (interrupted), `pause` holds
    it while set."""

    async def __call__(
        self,
        settings: Settings,
        path: Path,
        *,
        rate: float | None,
        speed: float | None,
        loops: int,
        progress: Callable[[int], None],
        stop: asyncio.Event,
        pause: asyncio.Event,
    ) -> ReplaySummary: ...


class ReplayRefusedError(Exception):
    """A replay request that cannot be honoured: status is the HTTP status to answer."""

    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message


@dataclass
class _Run:
    file: str
    rate: float | None
    speed: float | None
    loops: int
    records_total: int | None
    started_ns: int
    records_sent: int = 0
    error: str | None = None


class ReplayController:
    """Replay control of one API process; file_replay None: off (every start is a 403)."""

    def __init__(self, settings: Settings, file_replay: FileReplay | None) -> None:
        self.settings = settings
        self.file_replay = file_replay
        self.state: State = "idle"
        self._run: _Run | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._pause = asyncio.Event()

    @property
    def directory(self) -> Path | None:
        configured = self.settings.api.replay_dir
        return None if configured is None else configured.expanduser().resolve()

    def status(self) -> dict[str, Any]:
        """This API's replay, and `other_replay`: the replay another process runs into the
        records topic (`mbo run`'s own, an `mbo produce`), as its replay lock says, or None."""
        status = self._own_status()
        own_active = status["state"] in ("running", "paused")
        status["other_replay"] = None if own_active else replay_holder(self.settings)
        return status

    def _own_status(self) -> dict[str, Any]:
        run = self._run
        if run is None:
            return {
                "state": self.state, "file": None, "rate": None, "speed": None, "loop": None,
                "records_sent": 0, "records_total": None, "progress": None,
                "started_ns": None, "error": None,
            }  # fmt: skip
        progress = None
        if run.records_total:
            progress = min(1.0, run.records_sent / run.records_total)
        if self.state == "finished":
            progress = 1.0
        return {
            "state": self.state,
            "file": run.file,
            "rate": run.rate,
            "speed": run.speed,
            "loop": run.loops,
            "records_sent": run.records_sent,
            "records_total": run.records_total,
            "progress": progress,
            "started_ns": run.started_ns,
            "error": run.error,
        }

    def files(self) -> list[str]:
        """Replayable files in the replay directory (and its subdirectories, hidden ones and
        those deeper than FILES_DEPTH left out), relative names. A directory or file that
        vanishes or cannot be read while it is listed is skipped, never an error: the
        directory may be shared with running jobs (a pipeline's data dir, browser profiles)."""
        directory = self.directory
        if directory is None or not directory.is_dir():
            return []
        found = []
        for root, subdirectories, names in os.walk(directory):  # errors are ignored
            relative = Path(root).relative_to(directory)
            if len(relative.parts) >= FILES_DEPTH:
                subdirectories.clear()
            subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
            found += [
                str(relative / name)
                for name in names
                if name.endswith(DBN_SUFFIXES) and (Path(root) / name).is_file()
            ]
        return sorted(found)

    def _replayer(self) -> FileReplay:
        if self.file_replay is None:
            raise ReplayRefusedError(
                403, None, "replay control is off: this API was started without a file replay"
            )
        return self.file_replay

    def resolve(self, name: str) -> Path:
        directory = self.directory
        if directory is None:
            raise ReplayRefusedError(
                403, None, "replay control is off: set MBO_API__REPLAY_DIR to allow it"
            )
        candidate = Path(name)
        path = (candidate if candidate.is_absolute() else directory / candidate).resolve()
        if not path.is_relative_to(directory):
            raise ReplayRefusedError(
                403, "file", f"file must be inside the replay directory {directory}"
            )
        if not path.is_file():
            raise ReplayRefusedError(422, "file", f"no such file in the replay directory: {name}")
        if not path.name.endswith(DBN_SUFFIXES):
            raise ReplayRefusedError(422, "file", "file must be a .dbn or .dbn.zst file")
        return path

    async def start(
        self, name: str, rate: float | None, speed: float | None, loops: int
    ) -> tuple[bool, dict[str, Any]]:
        """Start a replay unless one is active; (started, status)."""
        if self.state in ("running", "paused"):
            return False, self.status()
        if rate is not None and speed is not None:
            raise ReplayRefusedError(422, "speed", "give rate or speed, not both")
        replay_file = self._replayer()
        path = self.resolve(name)
        try:
            check_replay_lock(self.settings)
        except ReplayBusyError as exc:
            raise ReplayRefusedError(409, None, str(exc)) from None
        from mbo_core.dbn import open_mbo  # noqa: PLC0415 (databento loads slowly)

        try:
            source = await asyncio.to_thread(open_mbo, path)
        except (InputError, MboError) as exc:
            raise ReplayRefusedError(422, "file", str(exc)) from None
        count = source.record_count
        self._run = _Run(
            file=str(path.relative_to(self.directory or path.parent)),
            rate=rate,
            speed=speed,
            loops=loops,
            records_total=None if count is None else count * loops,
            started_ns=time.time_ns(),
        )
        self._stop = asyncio.Event()
        self._pause = asyncio.Event()
        self.state = "running"
        self._task = asyncio.create_task(self._replay(replay_file, path, self._run), name="replay")
        return True, self.status()

    async def _replay(self, replay_file: FileReplay, path: Path, run: _Run) -> None:
        def progress(records: int) -> None:
            run.records_sent += records

        try:
            summary = await replay_file(
                self.settings, path, rate=run.rate, speed=run.speed, loops=run.loops,
                progress=progress, stop=self._stop, pause=self._pause,
            )  # fmt: skip
            run.records_sent = summary.records_read
            self.state = "stopped" if summary.interrupted else "finished"
        except asyncio.CancelledError:
            self.state = "stopped"
            raise
        except (InputError, MboError, OSError) as exc:
            run.error = str(exc)
            self.state = "failed"
            log.warning("replay of %s failed: %s", path, exc)
        except Exception as exc:  # a replay bug must show in the status, not kill the API
            run.error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            log.exception("replay of %s failed", path)

    def pause(self) -> dict[str, Any]:
        if self.state == "running":
            self._pause.set()
            self.state = "paused"
        return self.status()

    def resume(self) -> dict[str, Any]:
        if self.state == "paused":
            self._pause.clear()
            self.state = "running"
        return self.status()

    async def stop(self) -> dict[str, Any]:
        """Stop the active replay (complete events read so far are delivered first)."""
        task = self._task
        if self.state in ("running", "paused") and task is not None:
            self._stop.set()
            self._pause.clear()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
            self.state = "stopped"
        return self.status()

    async def close(self) -> None:
        task = self._task
        if task is not None and not task.done():
            self._stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), 10)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
