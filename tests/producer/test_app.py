"""`produce_file` against a real broker: what lands in the records topic, exactly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from generator.api import generate_file
from generator.core import GeneratorConfig
from mbo_core.errors import InputError, MboError
from mbo_core.settings import Settings
from mbo_core.wire import decode_records
from mbo_core.wire.headers import H_REPLAY_COPY, H_REPLAY_ID
from producer.app import SLICE_S, ProduceSummary, chunk_bound, produce_file, time_slice_s
from producer.chunking import F_LAST, UNDEF_PRICE
from tests.conftest import make_settings
from tests.paths import CLX5
from tests.producer.reading import Message, check_chunks, file_records, read_topic

KEY = b"432669"
#: Small enough that CLX5 needs many messages and some events (up to 648 records) exceed it.
BOUND = 64


def with_pipeline(settings: Settings, **pipeline: float) -> Settings:
    return settings.model_copy(update={"pipeline": settings.pipeline.model_copy(update=pipeline)})


def produce(settings: Settings, **options: object) -> ProduceSummary:
    return asyncio.run(produce_file(settings, CLX5, **options))  # type: ignore[arg-type]


def values(messages: list[Message]) -> bytes:
    return b"".join(m.value for m in messages)


@pytest.mark.integration
def test_the_file_arrives_exactly_as_chunks_of_whole_events(infra_settings: Settings) -> None:
    settings = with_pipeline(infra_settings, chunk_records=BOUND)
    before = time.time_ns()
    summary = produce(settings)
    after = time.time_ns()
    messages = read_topic(settings)

    records = file_records(CLX5)
    *chunks, marker = messages
    assert values(chunks) == records.tobytes()  # every record, byte for byte, in file order
    check_chunks(messages, BOUND)
    assert any(len(m.records) > BOUND for m in chunks)  # the big events travelled whole
    assert {m.key for m in messages} == {KEY}
    assert len({m.partition for m in messages}) == 1
    for message in chunks:
        sent_ns = int(message.header["sent-ns"])
        assert before <= sent_ns <= after
        assert message.headers == (
            ("mbo-schema", b"dbn.mbo"),
            ("dbn-version", b"3"),
            ("dataset", b"GLBX.MDP3"),
            ("symbol", b"CLX5"),
            ("sent-ns", str(sent_ns).encode()),
            ("records", str(len(message.records)).encode()),
            ("replay-id", str(summary.replay_id).encode()),
            ("replay-copy", b"1"),
            ("instrument-records", message.header["instrument-records"]),
        )
        decoded = decode_records(message.value, message.headers)
        assert decoded.symbol == "CLX5" and not decoded.end_of_stream
    assert marker.end_of_stream and marker.key == KEY
    assert decode_records(marker.value, marker.headers).end_of_stream

    assert summary.records_read == summary.records_sent == len(records) == 38_212
    assert summary.messages == len(chunks)
    assert summary.messages_by_instrument == {432669: len(chunks)}
    assert (summary.end_of_stream_markers, summary.instruments) == (1, 1)
    assert (summary.clears, summary.unterminated_records, summary.copies) == (0, 0, 1)
    assert summary.chunk_records == BOUND and summary.mode == "max"
    assert not summary.interrupted
    assert summary.first_sent_ns == int(chunks[0].header["sent-ns"])
    assert summary.last_sent_ns == int(chunks[-1].header["sent-ns"])


@pytest.mark.integration
def test_loops_put_a_clear_of_every_book_between_copies(infra_settings: Settings) -> None:
    summary = produce(infra_settings, loops=2)
    messages = read_topic(infra_settings)
    check_chunks(messages, infra_settings.pipeline.chunk_records)
    assert sum(m.end_of_stream for m in messages) == 1
    assert messages[-1].end_of_stream

    records = file_records(CLX5)
    sent = np.frombuffer(values(messages[:-1]), dtype=records.dtype)
    assert len(sent) == 2 * len(records) + 1
    assert sent[: len(records)].tobytes() == records.tobytes()
    assert sent[len(records) + 1 :].tobytes() == records.tobytes()
    clear = sent[len(records)]
    assert (chr(clear["action"]), chr(clear["side"])) == ("R", "N")
    assert (clear["instrument_id"], clear["publisher_id"]) == (432669, 1)
    assert clear["flags"] == F_LAST and clear["price"] == UNDEF_PRICE
    assert (clear["size"], clear["order_id"], clear["sequence"]) == (0, 0, 0)
    last = records[-1]
    assert (clear["ts_event"], clear["ts_recv"]) == (last["ts_event"], last["ts_recv"])
    assert (clear["rtype"], clear["length"]) == (0xA0, 14)

    assert (summary.clears, summary.copies, summary.loops) == (1, 2, 2)
    assert summary.records_read == 2 * len(records)
    assert summary.records_sent == 2 * len(records) + 1

    # Every message says its run: the replay's id (a new one: none was given) and its copy,
    # the Clear opening copy 2; the end marker is copy 2's.
    assert summary.replay_id is not None and summary.replay_id.startswith("replay-")
    assert {m.header[H_REPLAY_ID] for m in messages} == {summary.replay_id.encode()}
    copy_of_records = np.concatenate(
        [np.full(len(m.records), int(m.header[H_REPLAY_COPY])) for m in messages[:-1]]
    )
    assert (copy_of_records[: len(records)] == 1).all()
    assert (copy_of_records[len(records) :] == 2).all()
    assert messages[-1].header[H_REPLAY_COPY] == b"2"


@pytest.mark.integration
@pytest.mark.parametrize("pacing", [{"rate": 250_000.0}, {"speed": 40_000.0}])
def test_paced_replays_send_the_same_records(
    infra_settings: Settings, pacing: dict[str, float]
) -> None:
    settings = with_pipeline(infra_settings, chunk_linger_ms=1.0)
    summary = produce(settings, **pacing)
    messages = read_topic(settings)
    check_chunks(messages, settings.pipeline.chunk_records)
    assert values(messages) == file_records(CLX5).tobytes()
    assert summary.mode == next(iter(pacing))
    assert summary.records_sent == 38_212 and not summary.interrupted


@pytest.mark.integration
def test_a_stop_ends_the_replay_with_whole_events_and_no_end_marker(
    infra_settings: Settings,
) -> None:
    settings = with_pipeline(infra_settings, chunk_records=BOUND)
    stop_after = 10_000

    async def run() -> ProduceSummary:
        stop = asyncio.Event()
        read = 0

        def progress(count: int) -> None:
            nonlocal read
            read += count
            if read >= stop_after:
                stop.set()

        return await produce_file(settings, CLX5, rate=200_000, progress=progress, stop=stop)

    summary = asyncio.run(run())
    assert summary.interrupted
    assert summary.end_of_stream_markers == 0
    assert stop_after <= summary.records_read < 38_212
    # Every complete event read is sent; the event open at the stop is not (a resumed replay
    # sends it whole).
    assert summary.records_read - 648 <= summary.records_sent <= summary.records_read
    assert summary.unterminated_records == 0

    messages = read_topic(settings, messages=summary.messages)
    assert not any(m.end_of_stream for m in messages)
    check_chunks(messages, BOUND)
    records = file_records(CLX5)
    assert values(messages) == records[: summary.records_sent].tobytes()
    assert messages[-1].records["flags"][-1] & F_LAST  # ends with a whole event


@pytest.mark.integration
def test_an_event_too_large_for_one_request_is_an_error(infra_settings: Settings) -> None:
    kafka = infra_settings.kafka.model_copy(update={"max_request_size": 4096})
    settings = infra_settings.model_copy(update={"kafka": kafka})
    with pytest.raises(MboError, match=r"648 records .* MBO_KAFKA__MAX_REQUEST_SIZE=4096"):
        produce(settings)


def test_bad_options_fail_before_connecting() -> None:
    # No broker at this address: the options are refused before anything connects.
    settings = make_settings(kafka={"bootstrap_servers": "127.0.0.1:9"})
    with pytest.raises(InputError, match="--loop must be at least 1"):
        produce(settings, loops=0)
    with pytest.raises(InputError, match="--rate must be"):
        produce(settings, rate=-1.0)
    with pytest.raises(InputError, match="choose one of"):
        produce(settings, rate=1.0, speed=1.0)
    with pytest.raises(InputError, match="no such file"):
        asyncio.run(produce_file(settings, CLX5.with_name("missing.dbn")))


def test_chunk_bound_fits_one_request() -> None:
    assert chunk_bound(make_settings()) == 8192
    small = make_settings(kafka={"max_request_size": 10 * 1024})
    assert chunk_bound(small) == (10 * 1024 - 1024) // 56
    assert chunk_bound(make_settings(pipeline={"chunk_records": 10})) == 10


def test_the_producer_does_not_load_numba() -> None:
    # numba (the processor's compiled JSON writers) costs ~1 s of start-up the producer never uses.
    code = "import sys, producer.app; print('numba' in sys.modules)"
    command = [sys.executable, "-c", code]
    loaded = subprocess.run(command, capture_output=True, text=True, check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "False"


def test_paced_time_slices_are_a_tenth_of_the_linger() -> None:
    assert make_settings().pipeline.chunk_linger_ms == 50
    assert time_slice_s(make_settings()) == pytest.approx(0.005)
    assert time_slice_s(make_settings(pipeline={"chunk_linger_ms": 2})) == SLICE_S


@pytest.mark.integration
def test_a_paced_replay_ends_instrument_by_instrument_not_all_at_once(
    infra_settings: Settings, tmp_path: Path
) -> None:
    # Four instruments; a 40 ms linger: time slices of 4 ms, the instruments' turns 4 ms apart.
    source = tmp_path / "four.dbn"
    generate_file(source, GeneratorConfig(instruments=4, records=20_000, seed=3))
    settings = with_pipeline(infra_settings, chunk_linger_ms=40.0)
    summary = asyncio.run(produce_file(settings, source, rate=200_000))
    messages = read_topic(settings, markers=4)
    assert sum(len(m.records) for m in messages) == summary.records_sent == 20_000

    def sent_ms(message: Message) -> float:
        return int(message.header["sent-ns"]) / 1e6

    markers = sorted(sent_ms(m) for m in messages if m.end_of_stream)
    assert len(markers) == 4
    # One marker per time slice (4 markers over 10 slices), not four at once: 12 ms from the
    # first to the last on an idle machine, under 1 ms all at once. A late wake-up on a busy
    # machine may bring two together, so the test asks for the spread, not for every gap.
    assert markers[-1] - markers[0] >= 6.0
    # Each instrument's last chunk left at its own turn.
    last_chunks: dict[bytes, float] = {}
    for message in messages:
        if not message.end_of_stream:
            last_chunks[message.key] = sent_ms(message)
    turns = sorted(last_chunks.values())
    assert len(turns) == 4
    assert turns[-1] - turns[0] >= 6.0
    assert turns[-1] <= markers[0]
