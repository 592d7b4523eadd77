"""The stages' Kafka watch: mbo_kafka_reachable follows whether a broker answers."""

from __future__ import annotations

import time

import pytest

from mbo_core.kafka.probes import free_port, watch_kafka
from mbo_core.metrics import KAFKA_REACHABLE


def _value(stage: str) -> float:
    return float(KAFKA_REACHABLE.labels(stage)._value.get())


def _wait_for(stage: str, value: float) -> None:
    deadline = time.monotonic() + 10
    while _value(stage) != value:
        assert time.monotonic() < deadline, f"mbo_kafka_reachable{{{stage}}} never {value}"
        time.sleep(0.02)


def test_nothing_listening_reads_unreachable() -> None:
    KAFKA_REACHABLE.labels("test-closed").set(-1)
    assert watch_kafka(f"127.0.0.1:{free_port()}", "test-closed", every_s=0.05)
    _wait_for("test-closed", 0)


@pytest.mark.integration
def test_a_running_broker_reads_reachable(kafka_bootstrap: str) -> None:
    KAFKA_REACHABLE.labels("test-open").set(-1)
    assert watch_kafka(kafka_bootstrap, "test-open", every_s=0.05)
    _wait_for("test-open", 1)
