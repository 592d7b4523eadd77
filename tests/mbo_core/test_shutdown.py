"""SIGTERM is honoured within 5 s whatever the broker does: here, a broker that is not there."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mbo_core.kafka.probes import free_port
from tests.paths import MBO

STAGES = [["sink", "--metrics-port", "0"], ["process", "--metrics-port", "0"]]


@pytest.mark.parametrize("stage", STAGES, ids=["sink", "process"])
def test_a_stage_waiting_for_an_absent_broker_stops_within_5_s_of_sigterm(
    tmp_path: Path, stage: list[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBO_")}
    env.update(
        MBO_DATA_DIR=str(tmp_path / "data"),
        MBO_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",  # nothing listens there
        MBO_CLICKHOUSE__URL=f"chdb://{tmp_path / 'clickhouse'}",
    )
    log = tmp_path / "stage.log"
    with log.open("wb") as out:
        process = subprocess.Popen([MBO, *stage], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "does not answer" not in log.read_text(errors="replace"):  # waiting, saying so
            assert process.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
            time.sleep(0.1)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        took = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
    assert took < 5, f"{stage[0]} took {took:.1f} s to stop"
