"""book_processor.app: the Faust app holds its fetches as long as the processor setting says and
keeps its local state under the data dir."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest
from faust.tables import TableManager
from faust.transport.drivers import aiokafka as faust_aiokafka

from book_processor.app import create_app, faust_dir, warm_up
from tests.conftest import make_settings


def test_the_processor_uses_its_own_fetch_wait() -> None:
    kafka = {"bootstrap_servers": "127.0.0.1:9", "processor_fetch_max_wait_ms": 7,
             "fetch_max_wait_ms": 300}  # fmt: skip
    settings = make_settings(kafka=kafka)
    create_app(settings)  # builds the app only: nothing connects
    # The consumer Faust builds gets this wait (book_processor.app._use_fetch_wait).
    assert faust_aiokafka.AIOKafkaConsumerThread._mbo_fetch_wait == 7  # type: ignore[attr-defined]


def test_building_the_app_reads_no_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust's venusian registration (for app.discover, unused) read the caller's source file
    and resolved every loaded module's path: 0.2 CPU-s of the worker's start."""

    def no_source(*args: object, **kwargs: object) -> None:
        raise AssertionError("source read while building the app")

    monkeypatch.setattr(inspect, "getframeinfo", no_source)
    app = create_app(make_settings(kafka={"bootstrap_servers": "127.0.0.1:9"}))
    assert [agent.name for agent in app.agents.values()] == ["book_processor.app.process"]


def test_the_table_manager_starts_without_faust_s_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faust's table manager slept 1 s at every start, for tables this app never has: the
    consumer subscribed, and the pipeline started, a second late."""
    app = create_app(make_settings(kafka={"bootstrap_servers": "127.0.0.1:9"}))
    manager = app.tables
    assert isinstance(manager, TableManager)
    slept: list[float] = []
    recovered: list[bool] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def start_recovery() -> None:
        recovered.append(True)

    monkeypatch.setattr(manager, "sleep", sleep)
    monkeypatch.setattr(manager.recovery, "start", start_recovery)
    # Nothing connects here: the consumer has no partitions yet, as at a real start.
    monkeypatch.setattr(app.consumer, "assignment", set)
    monkeypatch.setattr(app.consumer, "pause_partitions", lambda partitions: None)

    asyncio.run(manager.on_start())
    assert slept == []
    assert recovered == [True]
    assert manager._tables_registered.is_set()  # what the conductor waits for to subscribe


def test_faust_keeps_its_state_under_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data {odd} name"
    kafka = {"bootstrap_servers": "127.0.0.1:9", "processor_group_id": "g1"}
    settings = make_settings(data_dir=data_dir, kafka=kafka)
    app = create_app(settings)
    # Not "<app id>-data" in the working directory (Faust's default).
    assert app.conf.datadir == faust_dir(settings) == data_dir / "processor" / "g1"
    assert app.conf.tabledir.is_relative_to(data_dir)


def test_the_warm_up_message_goes_the_whole_way() -> None:
    """warm_up loads the kernel by publishing a real event: refused by the validation (as its
    first version's zeroed record was), it loaded nothing and the first records message of a
    run waited ~0.2 s for the kernel."""
    out = warm_up()
    assert out.rejected is None
    assert (out.records, out.events, out.bbo_rows, out.snapshot_count) == (2, 1, 1, 1)
