"""CPU time of running processes, from Linux's /proc (the benchmarks' one reader of it)."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_seconds(stat: str) -> float:
    """utime + stime from the text of a /proc .../stat file."""
    # The command name in parentheses may hold spaces: split what follows it.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (all its threads); OSError once it is gone."""
    return _stat_seconds(Path(f"/proc/{pid}/stat").read_text())


def thread_times(pid: int) -> tuple[str, dict[int, tuple[str, float]]]:
    """The process's own name and, per live thread id, its name and CPU seconds so far. Python's
    threads carry the process's name; a library may name its own (chDB's engine names its
    pools: ThreadPool, MergeMutate, ...). OSError once the process is gone."""
    name = Path(f"/proc/{pid}/comm").read_text().rstrip("\n")
    threads: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended between the listing and the read
        thread = stat[stat.index("(") + 1 : stat.rindex(")")]
        threads[int(task.name)] = (thread, _stat_seconds(stat))
    return name, threads
