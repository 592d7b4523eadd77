"""Cutting an MBO record stream into Kafka-sized chunks of whole events, one instrument each.

Pure (no I/O, no clock). `FlushSchedule` decides, from times its caller passes, when each
instrument's open chunk leaves.

Records arrive in file order, instruments interleaved. Each record joins its instrument's
buffer; a chunk is a run of one instrument's buffered records that ends right after an F_LAST
record, so a chunk always holds whole events. A chunk holds at most `chunk_records` records,
except that one event larger than that travels whole as a chunk of its own. Records of an
event whose F_LAST has not arrived yet stay buffered (across feeds) until it does.

`feed` returns only chunks that are full (the next event of that instrument would not fit);
`flush` also returns the open, not yet full chunks, of every instrument or of some (those whose
time to leave has come: `FlushSchedule`, the producer's linger). At the end of
a stream (or of one copy of a looped replay), `take_unfinished` hands over, per instrument, the
records after its last F_LAST: they are source data and go to the topic as a last chunk flagged
as an unterminated tail, which the processor counts and never applies.

All bookkeeping is numpy over the whole buffer (stable sort by instrument, F_LAST positions,
searchsorted); Python only loops over the chunks it emits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbo_core.records import (
    MBO_DTYPE,
    MBO_LENGTH_WORDS,
    RTYPE_MBO,
    join_records,
    take_records,
)

#: DBN flag: last record of an event for its instrument (databento RecordFlags.F_LAST).
#: Defined here rather than imported from mbo_core.book, which loads the compiled engine.
F_LAST = 128
#: DBN's "no price" (i64 max), the price of a Clear record.
UNDEF_PRICE = (1 << 63) - 1
ACTION_CLEAR = ord("R")
SIDE_NONE = ord("N")


@dataclass(frozen=True, slots=True)
class Chunk:
    """Whole events of one instrument, in file order; the last record is flagged F_LAST, except
    in an unterminated tail (`Chunker.take_unfinished`)."""

    instrument_id: int
    records: np.ndarray  # MBO_DTYPE

    def __len__(self) -> int:
        return len(self.records)


class Chunker:
    """Per-instrument buffers of the stream, cut into chunks of whole events (see module doc)."""

    def __init__(self, chunk_records: int) -> None:
        if chunk_records < 1:
            raise ValueError(f"chunk_records must be at least 1, not {chunk_records}")
        self.chunk_records = chunk_records
        # Records not yet emitted, grouped by instrument (each group in file order). Groups
        # appear in no particular order.
        self._pending: np.ndarray = np.empty(0, dtype=MBO_DTYPE)
        # The instruments with complete events buffered (what a flush would send).
        self._waiting: np.ndarray = np.empty(0, dtype=np.int64)

    @property
    def pending_records(self) -> int:
        """Records buffered: open chunks plus records of unfinished events."""
        return len(self._pending)

    def waiting_instruments(self) -> np.ndarray:
        """The instruments with complete events buffered: those a flush would send chunks of."""
        return self._waiting

    def feed(self, records: np.ndarray) -> list[Chunk]:
        """Buffer `records` (file order); return the chunks that are full."""
        if len(records) == 0:
            return []
        self._pending = join_records([self._pending, records]) if len(self._pending) else records
        return self._cut(flushing_only=None, flush_all=False)

    def flush(self, instruments: np.ndarray | None = None) -> list[Chunk]:
        """Every chunk of complete events, full or not, of `instruments` (of all if None)."""
        if not len(self._pending):
            return []
        return self._cut(flushing_only=instruments, flush_all=instruments is None)

    def take_unfinished(self) -> list[Chunk]:
        """Remove and return, one chunk per instrument, the records after its last F_LAST
        (events that never closed); call `flush` first, the chunks of complete events go before.

        Unlike other chunks, these do not end with an F_LAST record.
        """
        if not len(self._pending):
            return []
        groups = _groups(self._pending)
        tails: list[Chunk] = []
        keep = np.ones(len(groups.records), dtype=bool)
        for done, end in zip(groups.complete_ends.tolist(), groups.ends.tolist(), strict=True):
            if done < end:
                tail = groups.records[done:end].copy()
                tails.append(Chunk(int(tail["instrument_id"][0]), tail))
                keep[done:end] = False
        self._pending = take_records(groups.records, keep)
        return tails

    def _cut(
        self,
        *,
        flushing_only: np.ndarray | None,
        flush_all: bool,
    ) -> list[Chunk]:
        groups = _groups(self._pending)
        self._pending = groups.records
        starts, ends, complete_ends = groups.starts, groups.ends, groups.complete_ends
        has_complete = complete_ends > starts
        group_ids = self._pending["instrument_id"][starts]
        if flush_all:
            flushing = has_complete
        elif flushing_only is not None:
            flushing = has_complete & np.isin(group_ids, flushing_only)
        else:
            flushing = np.zeros(len(starts), dtype=bool)
        # A group yields full chunks only if it holds more than one chunk's worth of records.
        acting = flushing | (has_complete & (ends - starts > self.chunk_records))
        # The common paced case: a flushed group whose complete events fit one chunk.
        whole = flushing & (complete_ends - starts <= self.chunk_records)
        records = self._pending
        chunks = [
            Chunk(instrument_id, records[start:done])
            for instrument_id, start, done in zip(
                records["instrument_id"][starts[whole]].tolist(),
                starts[whole].tolist(),
                complete_ends[whole].tolist(),
                strict=True,
            )
        ]
        cut_from = [starts[whole]]
        cut_to = [complete_ends[whole]]
        last_positions = groups.last_positions
        idle = has_complete & ~acting
        waiting = idle.copy()
        for index in np.flatnonzero(acting & ~whole).tolist():
            start, end, done = int(starts[index]), int(ends[index]), int(complete_ends[index])
            position = self._cut_group(
                chunks, start, end, done, last_positions, flush=bool(flushing[index])
            )
            cut_from.append(np.array([start]))
            cut_to.append(np.array([position]))
            if position < done:  # an open chunk stays until its instrument is flushed
                waiting[index] = True
        self._waiting = group_ids[waiting].astype(np.int64)
        if chunks:
            # Drop the emitted ranges [from, to) of the buffer: +1 at each start, -1 at each end,
            # a running sum of 0 means kept.
            marks = np.zeros(len(records) + 1, dtype=np.int64)
            np.add.at(marks, np.concatenate(cut_from), 1)
            np.add.at(marks, np.concatenate(cut_to), -1)
            keep = np.cumsum(marks[:-1]) == 0
            # Chunks are views of the old buffer, which they keep alive; the buffer moves on.
            self._pending = take_records(records, keep)
        return chunks

    def _cut_group(
        self,
        chunks: list[Chunk],
        start: int,
        end: int,
        done: int,
        last_positions: np.ndarray,
        *,
        flush: bool,
    ) -> int:
        """Append the group's chunks to `chunks`; returns the first record not emitted."""
        records = self._pending
        instrument_id = int(records["instrument_id"][start])
        limit_records = self.chunk_records
        # Ends (exclusive) of the group's complete events, as positions in the buffer.
        lo = int(np.searchsorted(last_positions, start))
        hi = int(np.searchsorted(last_positions, done))
        event_ends = last_positions[lo:hi] + 1
        position = start
        while position < done:
            # Without flushing, a chunk is cut only once the buffer holds more than it may take:
            # then the next event cannot join it.
            if not flush and end - position <= limit_records:
                break
            fit = int(np.searchsorted(event_ends, position + limit_records, side="right")) - 1
            if fit >= 0 and int(event_ends[fit]) > position:
                cut = int(event_ends[fit])
            else:
                # The next event alone exceeds the bound: it travels whole.
                cut = int(event_ends[np.searchsorted(event_ends, position, side="right")])
            chunks.append(Chunk(instrument_id, records[position:cut]))
            position = cut
        return position


class FlushSchedule:
    """When each instrument's open chunk leaves in a paced replay: every `linger`, at a phase
    of its own.

    Why: with one deadline per chunk (its oldest record plus the linger), the chunks of every
    instrument opened in the same time slice and left in the same one, so the book processor
    got N messages at once and took them one after the other: the last waited for N-1 others
    (8 instruments at 50k records/s: ~1.2 ms each, most of the send->event p90). Here instrument
    k (in the order instruments first appear) leaves at times k/phases * linger + m * linger, so
    with `phases` = linger / time slice they leave a slice apart. A record still waits at most
    the linger (plus the slice the replay is in) for its chunk. Times are the replay clock's.
    A linger of 0 sends every waiting instrument at once, at every call.
    """

    def __init__(self, linger: float, phases: int) -> None:
        if linger < 0 or phases < 1:
            raise ValueError(f"linger must be >= 0 and phases >= 1, not {linger}, {phases}")
        self.linger = linger
        self.phases = phases
        self._index: dict[int, int] = {}
        self._due = np.empty(0, dtype=np.float64)

    def due(self, waiting: np.ndarray, now: float) -> np.ndarray:
        """Which of the `waiting` instruments leave now; every instrument whose time has come
        moves on to its next one, waiting or not."""
        if self.linger == 0:
            return waiting
        self._learn(waiting, now)
        passed = self._due <= now
        if not passed.any():
            return waiting[:0]
        rows = np.array([self._index[i] for i in waiting.tolist()], dtype=np.intp)
        leaving = waiting[passed[rows]] if len(rows) else waiting[:0]
        late = self._due[passed]
        self._due[passed] = late + self.linger * (np.floor((now - late) / self.linger) + 1)
        return leaving

    def next_due(self, waiting: np.ndarray) -> float | None:
        """The earliest time one of the `waiting` instruments leaves (None if none waits)."""
        if not len(waiting) or self.linger == 0:
            return None
        known = [self._index[i] for i in waiting.tolist() if i in self._index]
        return float(self._due[known].min()) if known else None

    def _learn(self, waiting: np.ndarray, now: float) -> None:
        new = [i for i in waiting.tolist() if i not in self._index]
        if not new:
            return
        step = self.linger / self.phases
        first = len(self._index)
        due = np.empty(len(new), dtype=np.float64)
        for n, instrument in enumerate(new):
            self._index[instrument] = first + n
            phase = ((first + n) % self.phases) * step
            # Its first time at or after now, so its first records wait at most the linger.
            due[n] = phase + self.linger * max(0.0, np.ceil((now - phase) / self.linger))
        self._due = np.concatenate([self._due, due])


@dataclass(frozen=True, slots=True)
class _Groups:
    records: np.ndarray  # grouped by instrument, each group in its original order
    starts: np.ndarray  # first position of each group
    ends: np.ndarray  # one past the last position of each group
    complete_ends: np.ndarray  # one past the group's last F_LAST record (= start if none)
    last_positions: np.ndarray  # positions of every F_LAST record, ascending


def _groups(records: np.ndarray) -> _Groups:
    ids = records["instrument_id"]
    if ids.min() != ids.max():
        # Stable: each instrument's records keep their order.
        order = np.argsort(ids, kind="stable")
        records = take_records(records, order)
        ids = records["instrument_id"]
        starts = np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1])
    else:
        starts = np.zeros(1, dtype=np.intp)
    ends = np.append(starts[1:], len(records))
    last_positions = np.flatnonzero(records["flags"] & F_LAST)
    # The last F_LAST before each group's end, if it lies inside the group.
    before_end = np.searchsorted(last_positions, ends) - 1
    candidate = last_positions[np.maximum(before_end, 0)] if len(last_positions) else starts - 1
    inside = (before_end >= 0) & (candidate >= starts)
    complete_ends = np.where(inside, candidate + 1, starts)
    return _Groups(records, starts, ends, complete_ends, last_positions)


def clear_records(books: dict[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """One Clear (action R, F_LAST) per (instrument_id, publisher_id) book, sorted by book.

    `books` maps each book to the (ts_event, ts_recv) its Clear carries (its last record's).
    The book engine empties a book on R, so a replayed copy that follows starts from nothing.
    """
    keys = sorted(books)
    out = np.zeros(len(keys), dtype=MBO_DTYPE)
    out["length"] = MBO_LENGTH_WORDS
    out["rtype"] = RTYPE_MBO
    out["action"] = ACTION_CLEAR
    out["side"] = SIDE_NONE
    out["flags"] = F_LAST
    out["price"] = UNDEF_PRICE
    for index, key in enumerate(keys):
        instrument_id, publisher_id = key
        ts_event, ts_recv = books[key]
        out["instrument_id"][index] = instrument_id
        out["publisher_id"][index] = publisher_id
        out["ts_event"][index] = ts_event
        out["ts_recv"][index] = ts_recv
    return out


def last_of_each_book(records: np.ndarray) -> dict[tuple[int, int], tuple[int, int]]:
    """(ts_event, ts_recv) of the last record of each (instrument_id, publisher_id) in records."""
    if not len(records):
        return {}
    instruments = records["instrument_id"].astype(np.uint64)
    keys = (instruments << np.uint64(16)) | records["publisher_id"].astype(np.uint64)
    if keys.min() == keys.max():
        last = np.array([len(records) - 1])
    else:
        _unique, first_from_end = np.unique(keys[::-1], return_index=True)
        last = len(records) - 1 - first_from_end
    rows = records[last]
    return {
        (instrument_id, publisher_id): (ts_event, ts_recv)
        for instrument_id, publisher_id, ts_event, ts_recv in zip(
            rows["instrument_id"].tolist(),
            rows["publisher_id"].tolist(),
            rows["ts_event"].tolist(),
            rows["ts_recv"].tolist(),
            strict=True,
        )
    }
