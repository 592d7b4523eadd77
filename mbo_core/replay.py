"""Replaying MBO records through the book engine: the offline job behind `mbo book`.

Books are read only at F_LAST boundaries. Records of an event that is not closed yet within a
batch are held back and applied with the next batch (books are independent, so moving one book's
records later does not change any book's state at any of its F_LAST records, nor the order of
events). Records of events the stream never closes are counted as `unterminated_event_records`
and not applied, so the final books are the last observable ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mbo_core.book import F_LAST, BookEngine
from mbo_core.schemas import BookJson, book_json, book_sort_key

EventSink = Callable[[BookJson], None]


@dataclass(slots=True)
class ReplayResult:
    source: str
    records: int = 0
    events: int = 0
    books: list[BookJson] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "records": self.records,
            "events": self.events,
            "books": self.books,
        }


class Replayer:
    """Feeds batches of records to a BookEngine and reports books at event boundaries."""

    def __init__(
        self,
        *,
        depth: int = 10,
        symbols: dict[int, str] | None = None,
        on_event: EventSink | None = None,
        engine: BookEngine | None = None,
    ) -> None:
        self.engine = engine or BookEngine()
        self.depth = depth
        self.symbols = symbols or {}
        self.on_event = on_event
        self.records = 0
        self.events = 0
        self._held_back: np.ndarray | None = None
        self._books_of_instrument: dict[int, list[int]] = {}
        self._known_books = 0

    def feed(self, batch: np.ndarray) -> None:
        self.records += len(batch)
        if self._held_back is not None and len(self._held_back):
            batch = np.concatenate([self._held_back, batch])
        closed = closed_event_mask(batch)
        if closed.all():
            ready, self._held_back = batch, None
        else:
            ready, self._held_back = batch[closed], batch[~closed]
        self._apply(ready)

    def finish(self) -> None:
        """End of stream: records of events never closed are counted, not applied."""
        if self._held_back is not None and len(self._held_back):
            self.engine.mark_unterminated(self._held_back)
            self._held_back = None
        self._index_new_books()

    def _apply(self, records: np.ndarray) -> None:
        if self.on_event is None:
            self.engine.apply(records)
            self.events += int(np.count_nonzero(records["flags"] & F_LAST))
            return
        for book in self.engine.apply_events(records):
            self.events += 1
            self._emit(book)

    def _emit(self, book: int) -> None:
        assert self.on_event is not None
        engine = self.engine
        if engine.book_count != self._known_books:
            self._index_new_books()
        view = engine.view(book, self.depth)
        self.on_event(book_json(view, self.symbols.get(view.instrument_id)))
        siblings = self._books_of_instrument[view.instrument_id]
        if len(siblings) > 1:
            observable = [b for b in siblings if engine.is_observable(b)]
            merged = engine.consolidated(observable, self.depth)
            self.on_event(book_json(merged, self.symbols.get(view.instrument_id)))

    def _index_new_books(self) -> None:
        keys = self.engine.book_keys()
        for b in range(self._known_books, len(keys)):
            self._books_of_instrument.setdefault(keys[b].instrument_id, []).append(b)
        self._known_books = len(keys)

    def final_books(self) -> list[BookJson]:
        """Every book's last observable state, plus a consolidated one per multi-publisher
        instrument, in final.json order."""
        self._index_new_books()
        engine = self.engine
        books: list[BookJson] = []
        for instrument_id, indexes in self._books_of_instrument.items():
            symbol = self.symbols.get(instrument_id)
            books.extend(book_json(engine.view(b, self.depth), symbol) for b in indexes)
            if len(indexes) > 1:
                books.append(book_json(engine.consolidated(indexes, self.depth), symbol))
        books.sort(key=book_sort_key)
        return books

    def result(self, source: str) -> ReplayResult:
        return ReplayResult(
            source=source, records=self.records, events=self.events, books=self.final_books()
        )


def closed_event_mask(records: np.ndarray) -> np.ndarray:
    """True for records at or before the last F_LAST record of their own book in this array."""
    n = len(records)
    keys = records["instrument_id"].astype(np.uint64) << np.uint64(16)
    keys |= records["publisher_id"].astype(np.uint64)
    last = (records["flags"] & F_LAST) != 0
    if n == 0 or (last[-1] and np.all(keys == keys[-1])):
        return np.ones(n, dtype=bool)
    positions = np.flatnonzero(last)
    if len(positions) == 0:
        return np.zeros(n, dtype=bool)
    # Last F_LAST position per book: unique over the reversed positions finds last occurrences.
    rev = positions[::-1]
    book_keys, first_in_rev = np.unique(keys[rev], return_index=True)
    last_close = rev[first_in_rev]
    slot = np.searchsorted(book_keys, keys)
    slot_clipped = np.minimum(slot, len(book_keys) - 1)
    has_close = book_keys[slot_clipped] == keys
    limit = np.where(has_close, last_close[slot_clipped], -1)
    return np.arange(n) <= limit


def replay_batches(
    batches: Iterable[np.ndarray],
    *,
    source: str,
    depth: int = 10,
    symbols: dict[int, str] | None = None,
    on_event: EventSink | None = None,
) -> ReplayResult:
    replayer = Replayer(depth=depth, symbols=symbols, on_event=on_event)
    for batch in batches:
        replayer.feed(batch)
    replayer.finish()
    return replayer.result(source)
