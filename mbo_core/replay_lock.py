"""One replay at a time into a records topic on one machine.

Two replays into the same records topic interleave their records, and where they share
instruments the books mix (each replay's orders and Clears act on the other's). `mbo produce`,
the producer `mbo run` starts and the API's replay control therefore all replay under an
exclusive lock on `<data dir>/locks/replay.<records topic>.lock` (fcntl.flock: the kernel
releases it when the process ends, even by SIGKILL), which holds a line saying who replays what.
A second replay is refused with that line in the message.

The lock covers one machine (one data directory). Where the data directory cannot be written
(a read-only container), the replay goes on without it and says so in the log: across
machines, run one producer per records topic.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mbo_core.errors import MboError
from mbo_core.settings import Settings

log = logging.getLogger("producer")


class ReplayBusyError(MboError):
    """Another replay into the same records topic is running on this machine."""


def lock_path(settings: Settings) -> Path:
    return settings.data_dir / "locks" / f"replay.{settings.topics.records.name}.lock"


def _open(settings: Settings) -> IO[str] | None:
    path = lock_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a+", encoding="utf-8")
    except OSError as exc:
        log.warning("replaying without the replay lock %s: %s", path, exc.strerror or exc)
        return None


def _try_lock(handle: IO[str]) -> str | None:
    """Lock `handle`; None if locked, else the line of the replay that holds the lock."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        return handle.read().strip() or "a replay"
    return None


def _busy(settings: Settings, holder: str) -> ReplayBusyError:
    return ReplayBusyError(
        f"another replay into {settings.topics.records.name} is running on this machine "
        f"({holder}): two replays would mix their books; wait for it to end or stop it"
    )


@contextlib.contextmanager
def replay_lock(settings: Settings, what: str) -> Iterator[None]:
    """Hold the records topic's replay lock while the block runs; ReplayBusyError if another
    process (or another replay of this one) holds it. `what` says what is replayed."""
    handle = _open(settings)
    if handle is None:
        yield
        return
    with handle:
        holder = _try_lock(handle)
        if holder is not None:
            raise _busy(settings, holder)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{what}, pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def replay_holder(settings: Settings) -> str | None:
    """The line of the replay into the records topic that holds the lock now (say, `mbo run`'s
    producer: "CLX5_mbo.dbn at 5,000 records/s, pid 123"); None if none does."""
    handle = _open(settings)
    if handle is None:
        return None
    with handle:
        holder = _try_lock(handle)
        if holder is None:
            fcntl.flock(handle, fcntl.LOCK_UN)
        return holder


def check_replay_lock(settings: Settings) -> None:
    """ReplayBusyError if a replay into the records topic holds the lock now."""
    holder = replay_holder(settings)
    if holder is not None:
        raise _busy(settings, holder)
