"""Stage logging: repeated warnings are held back, distinct lines and info pass."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from mbo_core.logs import RepeatedLogFilter


def _record(msg: str, level: int = logging.ERROR, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, ("x",), None)


def test_the_same_error_passes_once_per_interval_with_a_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("mbo_core.logs.time", SimpleNamespace(monotonic=lambda: clock[0]))
    repeats = RepeatedLogFilter(interval_s=10)
    assert repeats.filter(_record("Unable connect to node %s"))
    for _ in range(500):  # a reconnect storm
        clock[0] += 0.01
        assert not repeats.filter(_record("Unable connect to node %s"))
    assert repeats.filter(_record("Unable connect to node %s", name="other"))  # another logger
    assert repeats.filter(_record("Failed fetch %s"))  # another line
    assert repeats.filter(_record("Unable connect to node %s", level=logging.INFO))  # info
    clock[0] += 10
    after = _record("Unable connect to node %s")
    assert repeats.filter(after)
    assert after.getMessage() == "Unable connect to node x (and 500 more like it in 15 s)"
