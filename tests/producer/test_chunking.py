"""Cutting a record stream into chunks of whole events, one instrument each (pure)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbo_core.records import MBO_DTYPE, MBO_LENGTH_WORDS, RTYPE_MBO
from producer.chunking import (
    F_LAST,
    UNDEF_PRICE,
    Chunk,
    Chunker,
    clear_records,
    last_of_each_book,
)


def stream(instruments: Sequence[int], last: Sequence[bool]) -> np.ndarray:
    """Records with these instrument ids and F_LAST flags; `sequence` is the stream position,
    so a record can be recognised after any reordering."""
    out = np.zeros(len(instruments), dtype=MBO_DTYPE)
    out["rtype"], out["length"] = RTYPE_MBO, MBO_LENGTH_WORDS
    out["instrument_id"] = instruments
    out["publisher_id"] = 1
    out["flags"] = np.where(np.asarray(last, dtype=bool), F_LAST, 0)
    out["sequence"] = np.arange(len(instruments))
    out["ts_recv"] = 1_000 + np.arange(len(instruments))
    return out


def events(sizes: Sequence[int], instrument_id: int = 7) -> np.ndarray:
    """One instrument's events of these sizes, back to back."""
    last = [i == size - 1 for size in sizes for i in range(size)]
    return stream([instrument_id] * len(last), last)


def sizes(chunks: Sequence[Chunk]) -> list[int]:
    return [len(chunk) for chunk in chunks]


def positions(chunks: Sequence[Chunk]) -> list[int]:
    return [int(s) for chunk in chunks for s in chunk.records["sequence"]]


def test_full_chunks_are_cut_at_event_ends_and_the_rest_waits_for_a_flush() -> None:
    chunker = Chunker(4)
    # Events of 1, 2, 3 and 1 records: 1+2 fill a chunk as far as whole events allow.
    full = chunker.feed(events([1, 2, 3, 1]))
    assert sizes(full) == [3]
    assert chunker.pending_records == 4
    rest = chunker.flush()
    assert sizes(rest) == [4]
    assert positions(full + rest) == list(range(7))
    assert chunker.pending_records == 0
    assert chunker.next_open_time() is None


def test_every_chunk_ends_with_f_last_and_respects_the_bound() -> None:
    chunker = Chunker(5)
    chunks = chunker.feed(events([2, 2, 2, 1, 3, 3, 1, 1])) + chunker.flush()
    # Greedy: 2+2 (another 2 would make 6), 2+1, 3, 3+1+1.
    assert sizes(chunks) == [4, 3, 3, 5]
    for chunk in chunks:
        assert chunk.records["flags"][-1] & F_LAST
        assert chunk.instrument_id == 7


def test_an_event_larger_than_the_bound_travels_whole() -> None:
    chunker = Chunker(2)
    chunks = chunker.feed(events([1, 5, 1])) + chunker.flush()
    assert sizes(chunks) == [1, 5, 1]


def test_an_unfinished_event_waits_for_its_f_last_across_feeds() -> None:
    chunker = Chunker(100)
    records = events([2, 3])
    assert chunker.feed(records[:3]) == []
    assert sizes(chunker.flush()) == [2]  # the complete event only
    assert chunker.pending_records == 1
    assert chunker.flush() == []
    assert chunker.feed(records[3:4]) == []
    assert chunker.pending_records == 2
    assert chunker.feed(records[4:]) == []
    (chunk,) = chunker.flush()
    assert positions([chunk]) == [2, 3, 4]


def test_an_unterminated_tail_is_handed_over_after_the_complete_chunks() -> None:
    chunker = Chunker(10)
    records = stream([1, 1, 2, 1, 2, 2], [True, False, False, False, True, False])
    assert chunker.feed(records) == []
    chunks = chunker.flush()
    assert {chunk.instrument_id: positions([chunk]) for chunk in chunks} == {1: [0], 2: [2, 4]}
    tails = chunker.take_unfinished()  # instrument 1: positions 1, 3; instrument 2: 5
    assert {tail.instrument_id: positions([tail]) for tail in tails} == {1: [1, 3], 2: [5]}
    assert chunker.take_unfinished() == []
    assert chunker.pending_records == 0


def test_interleaved_instruments_keep_their_own_order() -> None:
    rng = np.random.default_rng(5)
    instruments = rng.choice([11, 22, 33], size=400)
    last = rng.random(400) < 0.4
    records = stream(instruments.tolist(), last.tolist())
    chunker = Chunker(8)
    chunks: list[Chunk] = []
    for part in np.array_split(records, 7):
        chunks += chunker.feed(part)
    chunks += chunker.flush()
    chunker.take_unfinished()
    for instrument_id in (11, 22, 33):
        mine = [chunk for chunk in chunks if chunk.instrument_id == instrument_id]
        assert all((chunk.records["instrument_id"] == instrument_id).all() for chunk in mine)
        expected = np.flatnonzero(instruments == instrument_id)
        closed = expected[: np.flatnonzero(last[expected])[-1] + 1]
        assert positions(mine) == closed.tolist()


def test_a_full_chunk_could_not_take_the_next_event() -> None:
    chunker = Chunker(6)
    records = events([2, 3, 2, 4, 1, 1, 5])
    # 2+3 (the next 2 would make 7), 2+4, 1+1 (the next 5 would make 7); the last event
    # could still be joined by more, so it waits for a flush.
    assert sizes(chunker.feed(records)) == [5, 6, 2]
    assert sizes(chunker.flush()) == [5]


def test_linger_flush_sends_only_instruments_whose_oldest_record_waited_long_enough() -> None:
    chunker = Chunker(100)
    assert chunker.feed(stream([1, 1], [False, True]), now=10.0) == []
    assert chunker.next_open_time() == 10.0
    assert chunker.feed(stream([2], [True]), now=12.0) == []
    assert chunker.next_open_time() == 10.0
    assert chunker.flush(opened_by=9.0) == []
    (first,) = chunker.flush(opened_by=10.5)
    assert first.instrument_id == 1 and len(first) == 2
    assert chunker.next_open_time() == 12.0
    (second,) = chunker.flush(opened_by=12.0)
    assert second.instrument_id == 2
    assert chunker.next_open_time() is None


def test_linger_time_of_a_late_completed_event_is_its_first_record() -> None:
    chunker = Chunker(100)
    chunker.feed(stream([1], [False]), now=1.0)
    assert chunker.next_open_time() is None  # nothing could be sent yet
    chunker.feed(stream([1], [True]), now=5.0)
    assert chunker.next_open_time() == 1.0  # it has waited since 1.0: due at once


def test_chunk_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Chunker(0)


def test_clear_records_empty_each_book_with_its_last_timestamps() -> None:
    clears = clear_records({(9, 2): (50, 60), (3, 1): (10, 20)})
    assert clears.dtype == MBO_DTYPE
    assert clears["instrument_id"].tolist() == [3, 9]
    assert clears["publisher_id"].tolist() == [1, 2]
    assert clears["ts_event"].tolist() == [10, 50]
    assert clears["ts_recv"].tolist() == [20, 60]
    assert set(clears["action"].tolist()) == {ord("R")}
    assert set(clears["side"].tolist()) == {ord("N")}
    assert set(clears["flags"].tolist()) == {F_LAST}
    assert set(clears["price"].tolist()) == {UNDEF_PRICE}
    assert set(clears["rtype"].tolist()) == {0xA0}
    assert set(clears["length"].tolist()) == {14}
    for name in ("size", "order_id", "sequence", "ts_in_delta", "channel_id"):
        assert set(clears[name].tolist()) == {0}


def test_last_of_each_book() -> None:
    records = stream([1, 2, 1, 1], [True] * 4)
    records["publisher_id"] = [1, 1, 1, 2]
    records["ts_event"] = [5, 6, 7, 8]
    assert last_of_each_book(records) == {(1, 1): (7, 1002), (2, 1): (6, 1001), (1, 2): (8, 1003)}
    assert last_of_each_book(records[:1]) == {(1, 1): (5, 1000)}
    assert last_of_each_book(records[:0]) == {}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[np.ndarray, int, list[tuple[int, float | None]]]:
    count = draw(st.integers(0, 80))
    instruments = draw(st.lists(st.sampled_from([1, 2, 3]), min_size=count, max_size=count))
    last = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    bound = draw(st.integers(1, 7))
    # Feeds of consecutive slices, each maybe followed by a linger flush at some deadline.
    steps: list[tuple[int, float | None]] = []
    position = 0
    while position < count:
        take = draw(st.integers(1, count - position))
        flush_at = draw(st.one_of(st.none(), st.floats(-1.0, float(len(steps) + 1))))
        steps.append((take, flush_at))
        position += take
    return stream(instruments, last), bound, steps


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_chunks_are_exactly_each_instruments_complete_events_in_order(
    scenario: tuple[np.ndarray, int, list[tuple[int, float | None]]],
) -> None:
    records, bound, steps = scenario
    chunker = Chunker(bound)
    chunks: list[Chunk] = []
    position = 0
    for now, (take, flush_at) in enumerate(steps):
        chunks += chunker.feed(records[position : position + take], now=float(now))
        position += take
        if flush_at is not None:
            chunks += chunker.flush(opened_by=flush_at)
    chunks += chunker.flush()
    tails = chunker.take_unfinished()
    dropped = sum(len(tail) for tail in tails)
    assert chunker.pending_records == 0

    is_last = (records["flags"] & F_LAST) != 0
    expected_dropped = 0
    for instrument_id in (1, 2, 3):
        mine = np.flatnonzero(records["instrument_id"] == instrument_id)
        closed = np.flatnonzero(is_last[mine])
        complete = mine[: closed[-1] + 1] if len(closed) else mine[:0]
        expected_dropped += len(mine) - len(complete)
        sent = [chunk for chunk in chunks if chunk.instrument_id == instrument_id]
        assert positions(sent) == complete.tolist()
        tail = [t for t in tails if t.instrument_id == instrument_id]
        assert positions(tail) == mine[len(complete) :].tolist()
    assert dropped == expected_dropped
    for chunk in chunks:
        flags = chunk.records["flags"] & F_LAST
        assert flags[-1], "a chunk must end with F_LAST"
        assert (chunk.records["instrument_id"] == chunk.instrument_id).all()
        if len(chunk) > bound:
            assert not flags[:-1].any(), "only a single event may exceed the bound"
