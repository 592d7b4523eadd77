"""mbo_core.replay_lock: one replay at a time into a records topic on one machine, across
processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mbo_core.replay_lock import ReplayBusyError, check_replay_lock, lock_path, replay_lock
from mbo_core.settings import Settings
from tests.conftest import make_settings


def _settings(data: Path, prefix: str = "t") -> Settings:
    return make_settings(data_dir=str(data), topics={"records": {"name": f"{prefix}.records"}})


def test_a_second_replay_of_the_same_topic_is_refused_with_the_first_named(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    with replay_lock(settings, "a.dbn at 5,000 records/s"):
        with pytest.raises(ReplayBusyError, match=r"a\.dbn at 5,000 records/s, pid \d+"):
            check_replay_lock(settings)
        with (
            pytest.raises(ReplayBusyError, match="would mix their books"),
            replay_lock(settings, "b.dbn"),
        ):
            pass
    check_replay_lock(settings)  # released
    assert lock_path(settings).read_text() == ""


def test_other_topics_replay_side_by_side(tmp_path: Path) -> None:
    with replay_lock(_settings(tmp_path, "one"), "a"), replay_lock(_settings(tmp_path, "two"), "b"):
        check_replay_lock(_settings(tmp_path, "three"))


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from tests.conftest import make_settings
            from mbo_core.replay_lock import replay_lock
            settings = make_settings(data_dir={str(tmp_path)!r},
                                     topics={{"records": {{"name": "t.records"}}}})
            with replay_lock(settings, "held.dbn"):
                print("locked", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ReplayBusyError, match=r"held\.dbn"):
            check_replay_lock(settings)
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait(10)
        check_replay_lock(settings)
    finally:
        holder.kill()


def test_an_unwritable_data_dir_replays_without_the_lock(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = _settings(blocker)
    with replay_lock(settings, "a.dbn"):
        check_replay_lock(settings)
