"""Whole events, one at a time: the order in which books see a stream of MBO records.

Pure numpy, no I/O. A book is consistent only after a record flagged F_LAST closes its event
(shared/docs/book-rules.md), and the books of one instrument (one per publisher) may interleave
their events in a stream. The rule for a consolidated book (publisher_id null) at any F_LAST is:
the merge of every publisher's book of that instrument at its last consistent state, i.e. after
its own last F_LAST; a publisher in the middle of an event counts with the state it had before
that event began, never with half an event, and is never left out.

`EventGate` gives that rule to any consumer of the engine, whatever the stream is cut into
(batches of `mbo book`, Kafka messages of the processor): it releases an event's records only
when its F_LAST arrives, all together, at the F_LAST's place in the stream. Applied in that order,
every book is consistent at every F_LAST of every other book, so a consolidated view taken there
follows the rule. Books are independent, so moving an event's records later (never earlier than
records of their own book) changes no book's state at any of its own F_LAST records. Records of
an event not closed yet are held, across feeds, until its F_LAST comes; at the end of a stream
`take_open` hands them over to be counted (`BookEngine.mark_unterminated`), never applied.
"""

from __future__ import annotations

import numpy as np

from mbo_core.book.kernel import F_LAST
from mbo_core.records import MBO_DTYPE, join_records, take_records


def book_keys(records: np.ndarray) -> np.ndarray:
    """One uint64 per record naming its book: instrument_id << 16 | publisher_id."""
    keys = records["instrument_id"].astype(np.uint64) << np.uint64(16)
    keys |= records["publisher_id"].astype(np.uint64)
    return keys


def event_order(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, open_mask): `records[order]` holds every closed event's records together, each
    event at the place of its F_LAST record (events in F_LAST order, records in stream order
    within an event); `open_mask` marks the records of events not closed in `records`."""
    n = len(records)
    last = (records["flags"] & F_LAST) != 0
    keys = book_keys(records)
    if n == 0 or (last[-1] and np.all(last[:-1] | (keys[1:] == keys[:-1]))):
        # Every record but an F_LAST is followed by one of its own book, so every event's
        # records are consecutive, and the last record closes one: already in event order
        # (one book always is; so is a stream whose books do not interleave inside events).
        # O(n) instead of the sort below: mbo book's batches hold many books.
        return np.arange(n, dtype=np.int64), np.zeros(n, dtype=bool)
    by_book = np.argsort(keys, kind="stable")  # each book's records, in stream order
    sorted_keys = keys[by_book]
    closes = np.flatnonzero(last[by_book])  # F_LAST positions in by_book order
    # For each record, the first F_LAST at or after it in its book's run, if any.
    nxt = np.searchsorted(closes, np.arange(n))
    has_next = nxt < len(closes)
    nxt_clipped = np.minimum(nxt, max(len(closes) - 1, 0))
    if len(closes):
        same_book = sorted_keys[closes[nxt_clipped]] == sorted_keys
    else:
        same_book = np.zeros(n, dtype=bool)
    closed_sorted = has_next & same_book
    close_at = np.full(n, n, dtype=np.int64)  # n: not closed
    close_at[by_book[closed_sorted]] = by_book[closes[nxt_clipped[closed_sorted]]]
    open_mask = close_at == n
    ready = np.flatnonzero(~open_mask)
    # Stable: within an event (one close position) the records keep their stream order.
    order = ready[np.argsort(close_at[ready], kind="stable")]
    return order, open_mask


class EventGate:
    """Holds the records of open events and releases whole events in F_LAST order."""

    def __init__(self) -> None:
        self._open = np.empty(0, dtype=MBO_DTYPE)

    @property
    def open_records(self) -> int:
        """Records held: their events have not closed yet."""
        return len(self._open)

    def feed(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ready, origin): the records whose events close now, in event order, and for each
        the index of that record in `records` (-1 for a record held from an earlier feed).

        Records held earlier come first within their events; `records` is not modified.
        """
        held = len(self._open)
        stream = records if held == 0 else join_records([self._open, records])
        order, open_mask = event_order(stream)
        if open_mask.any():
            self._open = take_records(stream, open_mask)
        else:
            self._open = stream[:0].copy()
        if held == 0 and len(order) == len(stream) and _is_identity(order):
            return records, np.arange(len(records), dtype=np.int64)
        return take_records(stream, order), order - held

    def take_open(self, instrument_id: int | None = None) -> np.ndarray:
        """Remove and return the held records (of one instrument, or all): the stream ended
        before their events closed."""
        if instrument_id is None:
            everything, self._open = self._open, self._open[:0].copy()
            return everything
        mine = self._open["instrument_id"] == instrument_id
        taken = take_records(self._open, mine)
        self._open = take_records(self._open, ~mine)
        return taken


def _is_identity(order: np.ndarray) -> bool:
    return bool(len(order) == 0 or (order[0] == 0 and np.all(np.diff(order) == 1)))
