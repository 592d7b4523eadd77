"""A Databento Live session into the records topic (producer.live, mbo_core.databento.live),
against the fake Live gateway on loopback (tests/databento_fakes.py: the real protocol, CLX5's
records as the stream) and a real broker: what lands in the topic, run by run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from mbo_core.databento import live as live_module
from mbo_core.databento.historical import DatabentoError
from mbo_core.databento.live import LiveFeed, LiveRequest
from mbo_core.dbn import open_mbo
from mbo_core.errors import InputError
from mbo_core.settings import Settings
from mbo_core.wire import decode_records
from producer.chunking import F_LAST
from producer.live import LiveSummary, live_replay_id, produce_live
from tests.conftest import make_settings
from tests.databento_fakes import CLX5_ID, FakeLive, LiveConnection, LivePlan, mbo_snapshot
from tests.paths import CLX5
from tests.producer.reading import Message, check_chunks, file_records, read_topic

KEY = "db-TESTKEYabcdefghijklmnopqrstu"
BOUND = 64
START = "2025-09-24T19:30"


@pytest.fixture(scope="module")
def records() -> np.ndarray:
    return file_records(CLX5)


@contextlib.contextmanager
def gateway(*plans: LivePlan, **options: Any) -> Iterator[FakeLive]:
    fake = FakeLive(keys=frozenset({KEY}), plans=list(plans), **options)
    with fake:
        yield fake
    assert not fake.running


def pointed(settings: Settings, fake: FakeLive | None, port: int | None = None) -> Settings:
    """The settings with the Live gateway at the fake and small chunks."""
    if port is None:
        assert fake is not None
        port = fake.port
    databento = settings.databento.model_copy(
        update={"live_gateway": "127.0.0.1", "live_port": port}
    )
    pipeline = settings.pipeline.model_copy(update={"chunk_records": BOUND})
    return settings.model_copy(update={"databento": databento, "pipeline": pipeline})


def session(
    settings: Settings,
    request: LiveRequest,
    until: Callable[[int], bool],
    *,
    key: str = KEY,
    record: Path | None = None,
    timeout: float = 30,
) -> LiveSummary:
    """produce_live, stopped (as by SIGINT) once `until(records received so far)` holds."""
    received = [0]

    def progress(n: int) -> None:
        received[0] += n

    async def main() -> LiveSummary:
        stop = asyncio.Event()
        task = asyncio.create_task(
            produce_live(settings, request, key=key, record=record, progress=progress, stop=stop)
        )
        deadline = time.monotonic() + timeout
        while not until(received[0]) and not task.done():
            assert time.monotonic() < deadline, f"received {received[0]} records"
            await asyncio.sleep(0.05)
        stop.set()
        return await task

    return asyncio.run(main())


def mid_event(records: np.ndarray, near: int) -> int:
    """The first index from `near` on that cuts an event (its record before lacks F_LAST)."""
    closes = (records["flags"] & F_LAST) != 0
    return near + int(np.argmax(~closes[near - 1 :]))


def after_event(records: np.ndarray, near: int) -> int:
    """The first index from `near` on that starts an event."""
    closes = (records["flags"] & F_LAST) != 0
    return near + int(np.argmax(closes[near - 1 :]))


def gaps(reason: str) -> float:
    return REGISTRY.get_sample_value("mbo_live_gaps_total", {"reason": reason}) or 0.0


def run_of(message: Message) -> tuple[str, int]:
    decoded = decode_records(message.value, message.headers, message.key)
    return decoded.replay_id, decoded.replay_copy


@pytest.mark.integration
def test_a_session_arrives_as_a_file_replay_would(
    infra_settings: Settings, records: np.ndarray, tmp_path: Path
) -> None:
    recorded = tmp_path / "session.dbn.zst"
    request = LiveRequest.of("GLBX.MDP3", "CLX5", start=START)
    with gateway(LivePlan(records), heartbeat_s=0.05) as fake:
        settings = pointed(infra_settings, fake)
        summary = session(
            settings, request, lambda n: n >= len(records) and len(fake.started()) == 1,
            record=recorded,
        )  # fmt: skip
        (connection,) = fake.started()
        (subscription,) = connection.subscriptions
    # The subscription the client sent: intraday replay from the start, no snapshot.
    assert (subscription.schema, subscription.stype_in, subscription.symbols) == (
        "mbo", "raw_symbol", "CLX5",
    )  # fmt: skip
    assert (int(subscription.start), int(subscription.snapshot)) == (1758742200000000000, 0)
    assert connection.auth.dataset == "GLBX.MDP3" and KEY not in str(connection.auth)

    messages = read_topic(settings)
    *chunks, marker = messages
    assert b"".join(m.value for m in chunks) == records.tobytes()  # every record, in order
    check_chunks(messages, BOUND)
    assert marker.end_of_stream and marker.key == str(CLX5_ID).encode()
    (run,) = {run_of(m) for m in messages}
    assert run == (summary.replay_id, 1) and run[0].startswith("live-GLBX-MDP3-")
    assert {m.header["symbol"] for m in messages} == {b"CLX5"}  # from the SymbolMappingMsg
    assert {m.header["dataset"] for m in messages} == {b"GLBX.MDP3"}

    assert summary.records_received == summary.records_sent == len(records) == 38_212
    assert (summary.connections, summary.gaps, summary.end_of_stream_markers) == (1, 0, 1)
    assert summary.messages == len(chunks) and summary.interrupted
    assert summary.system_messages == 1  # the subscription's acknowledgement
    assert summary.unterminated_records == 0 and summary.instruments == 1
    # The recording is what `mbo book` and `mbo run --replay` read: the same records.
    source = open_mbo(recorded)
    assert source.dataset == "GLBX.MDP3" and source.compressed
    assert np.concatenate(list(source.batches())).tobytes() == records.tobytes()
    # Its symbol comes from the stream's SymbolMappingMsg (live metadata has no mappings).
    assert source.symbols == {CLX5_ID: "CLX5"}


@pytest.mark.integration
def test_a_dropped_connection_is_a_gap_and_the_next_one_a_new_run_from_a_snapshot(
    infra_settings: Settings, records: np.ndarray
) -> None:
    # Connection 1 is reset mid-event; the gap loses what the gateway sent until `resumed`.
    cut, resumed = mid_event(records, 15_000), after_event(records, 20_000)
    at = records["ts_recv"]
    first = np.concatenate([mbo_snapshot(records[:0], CLX5_ID, at[0]), records[:cut]])
    second = np.concatenate(
        [mbo_snapshot(records[:resumed], CLX5_ID, at[resumed]), records[resumed:]]
    )
    request = LiveRequest.of("GLBX.MDP3", "CLX5")  # from a snapshot
    before = gaps("dropped")
    settled = {"n": -1.0, "at": 0.0}

    def everything_sent(n: int) -> bool:
        """Connection 2 sent all and nothing more arrived for a while (what connection 1's
        reset lost is unknown)."""
        started = fake.started()
        if len(started) < 2 or started[1].records_sent < len(second):
            return False
        if n != settled["n"]:
            settled.update(n=float(n), at=time.monotonic())
        return time.monotonic() - settled["at"] > 0.5

    plans = (LivePlan(first, end="reset"), LivePlan(second))
    with gateway(*plans) as fake:
        settings = pointed(infra_settings, fake)
        summary = session(settings, request, everything_sent)
        subscriptions = [c.subscriptions[0] for c in fake.started()]
    assert [int(s.snapshot) for s in subscriptions] == [1, 1]
    assert [s.start for s in subscriptions] == [None, None]
    assert gaps("dropped") == before + 1
    assert (summary.connections, summary.gaps, summary.end_of_stream_markers) == (2, 1, 1)

    messages = read_topic(settings)
    check_chunks(messages, BOUND)
    by_copy: dict[int, list[Message]] = {1: [], 2: []}
    for message in messages:
        replay_id, copy = run_of(message)
        assert replay_id == summary.replay_id
        by_copy[copy].append(message)
    # Run 1: a prefix of what connection 1 sent (a reset loses what the client had not read),
    # its unclosed event last, as an unterminated tail; no end-of-stream marker.
    run1 = b"".join(m.value for m in by_copy[1])
    assert 0 < len(run1) <= first.nbytes and first.tobytes().startswith(run1)
    got1 = np.frombuffer(run1, dtype=first.dtype)
    if not got1[-1]["flags"] & F_LAST:
        assert by_copy[1][-1].header.get("unterminated-tail") == b"1"
        assert summary.unterminated_records > 0
    assert not any(m.end_of_stream for m in by_copy[1])
    # Run 2: connection 2 whole, from its snapshot (a Clear, then the book's orders), then the
    # end-of-stream marker.
    *chunks2, marker = by_copy[2]
    assert b"".join(m.value for m in chunks2) == second.tobytes()
    assert marker.end_of_stream
    assert summary.records_received == len(got1) + len(second) == summary.records_sent


def test_a_silent_connection_is_a_gap_too(
    records: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No record and no heartbeat for the heartbeat interval and a margin: the connection is
    closed (the client's own monitor would leave its socket open) and made again."""
    monkeypatch.setattr(live_module, "SILENCE_MARGIN_S", 0.5)
    before = gaps("timeout")

    async def main() -> tuple[dict[int, int], list[LiveConnection]]:
        plans = (LivePlan(records[:500], end="silent"), LivePlan(records[500:1000]))
        with gateway(*plans) as fake:
            feed = LiveFeed(LiveRequest.of("GLBX.MDP3", "CLX5"), key=KEY, gateway="127.0.0.1",
                            port=fake.port, heartbeat_s=5)  # fmt: skip
            got: dict[int, int] = {}
            try:
                await feed.open()
                feed.start()
                deadline = time.monotonic() + 20
                while sum(got.values()) < 1000:
                    assert time.monotonic() < deadline, got
                    for segment in feed.take():
                        got[segment.connection] = got.get(segment.connection, 0)
                        got[segment.connection] += len(segment.records)
                    await asyncio.sleep(0.05)
            finally:
                await feed.close()
            assert feed.gaps == 1 and feed.failure is None
            return got, fake.started()

    got, started = asyncio.run(main())
    assert got == {1: 500, 2: 500}
    assert [c.auth.heartbeat_interval_s for c in started] == ["5", "5"]
    assert gaps("timeout") == before + 1


def feed_until(
    fake: FakeLive, until: Callable[[LiveFeed, int], bool], timeout: float = 20
) -> LiveFeed:
    """A LiveFeed on the fake (from a snapshot), taken from until `until(feed, records)` or its
    end; then closed."""

    async def main() -> LiveFeed:
        feed = LiveFeed(LiveRequest.of("GLBX.MDP3", "CLX5"), key=KEY, gateway="127.0.0.1",
                        port=fake.port, heartbeat_s=5)  # fmt: skip
        received = 0
        try:
            await feed.open()
            feed.start()
            deadline = time.monotonic() + timeout
            while not until(feed, received) and not feed.ended:
                assert time.monotonic() < deadline, received
                received += sum(len(segment.records) for segment in feed.take())
                await asyncio.sleep(0.05)
        finally:
            await feed.close()
        return feed

    return asyncio.run(main())


def test_a_gateway_that_does_not_come_back_ends_the_session(
    records: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "RECONNECT_FIRST_S", 0.05)
    monkeypatch.setattr(live_module, "RECONNECT_ATTEMPTS", 3)
    # It goes away after 100 records: reconnecting is refused, three times.
    with gateway(LivePlan(records[:100])) as fake:

        def gone(feed: LiveFeed, received: int) -> bool:
            if received >= 100 and fake.running:
                fake.stop()
            return False

        feed = feed_until(fake, gone)
    assert feed.gaps == 1 and feed.connections == 1
    assert str(feed.failure) == (
        f"Databento Live: lost the gateway 127.0.0.1:{fake.port} and could not reconnect (3 "
        f"attempts): cannot reach the Databento Live gateway 127.0.0.1:{fake.port}: "
        f"[Errno 111] Connect call failed ('127.0.0.1', {fake.port})"
    )
    # One that accepts and closes at once, with nothing: the same after three empty connections.
    plans = (LivePlan(records[:100], end="close"), LivePlan(records[:0], end="close"))
    with gateway(*plans) as fake:
        feed = feed_until(fake, lambda feed, received: False)
    assert (feed.connections, feed.gaps) == (4, 4)
    assert str(feed.failure) == (
        f"Databento Live: lost the gateway 127.0.0.1:{fake.port} and could not reconnect (3 "
        "attempts): the connections brought no record"
    )


@pytest.mark.integration
def test_a_gateway_error_ends_the_session_after_what_was_received(
    infra_settings: Settings, records: np.ndarray
) -> None:
    plan = LivePlan(records[:1000], error="Internal error: the gateway is restarting")
    with gateway(plan) as fake:
        settings = pointed(infra_settings, fake)
        with pytest.raises(DatabentoError) as raised:
            session(settings, LiveRequest.of("GLBX.MDP3", "CLX5", start=START), lambda n: False)
    assert str(raised.value) == "Databento Live: Internal error: the gateway is restarting"
    *chunks, marker = read_topic(settings)
    assert b"".join(m.value for m in chunks) == records[:1000].tobytes()
    assert marker.end_of_stream


@pytest.mark.integration
def test_an_unknown_symbol_is_an_error(infra_settings: Settings, records: np.ndarray) -> None:
    with gateway(LivePlan(records[:100])) as fake:
        settings = pointed(infra_settings, fake)
        with pytest.raises(DatabentoError) as raised:
            session(settings, LiveRequest.of("GLBX.MDP3", "CLX5,CLZ9"), lambda n: False)
    assert str(raised.value) == "Databento Live: Failed to resolve symbol: CLZ9"


def test_refusals_before_anything_is_sent(
    tmp_path: Path, records: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """Key, dataset, gateway: refused at the first connection, one line, the key nowhere."""
    settings = make_settings(data_dir=tmp_path)
    request = LiveRequest.of("GLBX.MDP3", "CLX5")
    bad = "db-WRONGKEYabcdefghijklmnopqrs"
    caplog.set_level(logging.DEBUG)
    with gateway(LivePlan(records[:10])) as fake:
        at_fake = pointed(settings, fake)

        def refused(request: LiveRequest, key: str | None) -> str:
            with pytest.raises(DatabentoError) as raised:
                asyncio.run(produce_live(at_fake, request, key=key))
            return str(raised.value)

        assert refused(request, bad) == "Databento Live: Authentication failed."
        other = LiveRequest.of("XNAS.ITCH", "AAPL")
        assert refused(other, KEY) == "Databento Live: Unknown dataset: XNAS.ITCH"
        assert refused(request, None).startswith("no Databento API key: set DATABENTO_API_KEY")
        assert not fake.started()
    closed = pointed(settings, None, port=fake.port)  # nothing listens there any more
    with pytest.raises(DatabentoError, match=r"^cannot reach the Databento Live gateway "
                       rf"127\.0\.0\.1:{fake.port}: "):  # fmt: skip
        asyncio.run(produce_live(closed, request, key=KEY))
    assert bad not in caplog.text and KEY not in caplog.text


def test_requests_are_checked_before_anything_connects(tmp_path: Path) -> None:
    request = LiveRequest.of(" glbx.mdp3 ", "CLZ5, CLX5,CLX5")
    assert (request.dataset, request.symbols, request.snapshot, request.start) == (
        "GLBX.MDP3", ("CLX5", "CLZ5"), True, None,
    )  # fmt: skip
    assert request.describe() == "GLBX.MDP3 mbo CLX5,CLZ5 (raw_symbol) from a snapshot"
    replay = LiveRequest.of("GLBX.MDP3", "CL.FUT", "parent", start="2025-09-24T13:30")
    assert (replay.snapshot, replay.start) == (False, 1758720600000000000)
    assert replay.describe().endswith("(parent) replayed from 2025-09-24T13:30:00Z")
    assert not LiveRequest.of("GLBX.MDP3", "CLX5", snapshot=False).snapshot
    for args, message in (
        (("GLBX.MDP3", "CLX5", "raw_symbol", START, True), "exclude each other"),
        (("GLBX MDP3", "CLX5"), "expected a dataset code"),
        (("GLBX.MDP3", " , "), "give at least one"),
        (("GLBX.MDP3", "CLX5", "isin"), "expected one of raw_symbol, parent, continuous"),
        (("GLBX.MDP3", "CLX5", "raw_symbol", "yesterday"), "expected an ISO 8601 time"),
    ):
        with pytest.raises(InputError, match=message):
            LiveRequest.of(*args)
    existing = tmp_path / "taken.dbn"
    existing.write_bytes(b"")
    with pytest.raises(InputError, match="exists; --record writes a new file"):
        LiveFeed(request, key=KEY, gateway=None, port=13000, record=existing)
    assert live_replay_id("GLBX.MDP3").startswith("live-GLBX-MDP3-")
    assert live_replay_id("GLBX.MDP3").replace("-", "").isalnum()
