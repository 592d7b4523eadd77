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
    FlushSchedule,
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
    assert chunker.waiting_instruments().tolist() == []


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


def test_flush_of_some_instruments_sends_only_theirs() -> None:
    chunker = Chunker(100)
    assert chunker.feed(stream([1, 1], [False, True])) == []
    assert chunker.feed(stream([2, 3], [True, False])) == []
    # Instrument 3's event is still open: nothing of it could be sent.
    assert sorted(chunker.waiting_instruments().tolist()) == [1, 2]
    assert chunker.flush(np.array([3])) == []
    (first,) = chunker.flush(np.array([1, 3]))
    assert first.instrument_id == 1 and len(first) == 2
    assert chunker.waiting_instruments().tolist() == [2]
    (second,) = chunker.flush(np.array([2]))
    assert second.instrument_id == 2
    assert chunker.waiting_instruments().tolist() == []
    assert chunker.pending_records == 1


def test_flush_schedule_sends_each_instrument_once_a_linger_at_phases_a_slice_apart() -> None:
    schedule = FlushSchedule(linger=10.0, phases=5)
    waiting = np.array([7, 8, 9])
    leaving: dict[float, list[int]] = {}
    for tick in range(40):
        now = tick * 1.0
        out = schedule.due(waiting, now).tolist()
        if out:
            leaving[now] = out
    # In the order first seen: phases 0, 2, 4 (of 10); one instrument a time.
    assert leaving == {
        0.0: [7], 2.0: [8], 4.0: [9], 10.0: [7], 12.0: [8], 14.0: [9],
        20.0: [7], 22.0: [8], 24.0: [9], 30.0: [7], 32.0: [8], 34.0: [9],
    }  # fmt: skip
    assert schedule.next_due(waiting) == 40.0
    assert schedule.next_due(waiting[:0]) is None


def test_flush_schedule_keeps_a_late_or_quiet_instruments_phase() -> None:
    schedule = FlushSchedule(linger=10.0, phases=2)
    assert schedule.due(np.array([1, 2]), 0.0).tolist() == [1]
    # Instrument 2 (phase 5) waits for nothing at 5 or at 17.
    assert schedule.due(np.array([1]), 17.0).tolist() == [1]  # late: 10 passed
    assert schedule.next_due(np.array([1, 2])) == 20.0
    # Its turns at 5 and 15 passed while it was quiet: the next is 25, not at once.
    assert schedule.due(np.array([2]), 24.0).tolist() == []
    assert schedule.next_due(np.array([2])) == 25.0
    assert schedule.due(np.array([2]), 25.0).tolist() == [2]
    assert schedule.next_due(np.array([2])) == 35.0


def test_flush_schedule_first_turn_comes_within_a_linger() -> None:
    schedule = FlushSchedule(linger=10.0, phases=2)
    assert schedule.due(np.array([1]), 3.0).tolist() == []  # phase 0: next turn at 10
    assert schedule.next_due(np.array([1])) == 10.0
    assert schedule.due(np.array([1, 2]), 4.0).tolist() == []  # phase 5: first turn at 5
    assert schedule.next_due(np.array([2])) == 5.0
    with pytest.raises(ValueError, match="linger"):
        FlushSchedule(linger=-1.0, phases=1)


def test_flush_schedule_without_linger_sends_whatever_waits() -> None:
    schedule = FlushSchedule(linger=0.0, phases=1)
    assert schedule.due(np.array([4, 5]), 0.0).tolist() == [4, 5]
    assert schedule.due(np.array([4]), 0.0).tolist() == [4]
    assert schedule.next_due(np.array([4])) is None


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
def scenarios(draw: st.DrawFn) -> tuple[np.ndarray, int, list[tuple[int, list[int] | None]]]:
    count = draw(st.integers(0, 80))
    instruments = draw(st.lists(st.sampled_from([1, 2, 3]), min_size=count, max_size=count))
    last = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    bound = draw(st.integers(1, 7))
    # Feeds of consecutive slices, each maybe followed by a flush of some instruments.
    steps: list[tuple[int, list[int] | None]] = []
    position = 0
    while position < count:
        take = draw(st.integers(1, count - position))
        flushed = draw(st.one_of(st.none(), st.lists(st.sampled_from([1, 2, 3]), max_size=3)))
        steps.append((take, flushed))
        position += take
    return stream(instruments, last), bound, steps


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_chunks_are_exactly_each_instruments_complete_events_in_order(
    scenario: tuple[np.ndarray, int, list[tuple[int, list[int] | None]]],
) -> None:
    records, bound, steps = scenario
    chunker = Chunker(bound)
    chunks: list[Chunk] = []
    position = 0
    for take, flushed in steps:
        chunks += chunker.feed(records[position : position + take])
        position += take
        if flushed is not None:
            chunks += chunker.flush(np.array(flushed, dtype=np.int64))
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
