"""Rebuilding books from MBO records with the book engine (a book rebuild): the offline job
behind `mbo book`.

Books are read only at F_LAST boundaries. Records go to the engine whole events at a time, each
event at its F_LAST's place in the stream (`mbo_core.book.events.EventGate`), so at every F_LAST
every book of the instrument is at its last consistent state, and the consolidated line there
merges all of them (a publisher in the middle of an event with its state before that event),
whatever the batches are. Records of events the stream never closes are counted as
`unterminated_event_records` and not applied, so the final books are the last observable ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mbo_core.book import F_LAST, BookEngine
from mbo_core.book.events import EventGate
from mbo_core.records import take_records
from mbo_core.schemas import BookJson, book_json, book_sort_key

EventSink = Callable[[BookJson], None]


@dataclass(slots=True)
class RebuildResult:
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


class BookRebuilder:
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
        self._gate = EventGate()
        self._books_of_instrument: dict[int, list[int]] = {}
        self._known_books = 0

    def feed(self, batch: np.ndarray) -> None:
        self.records += len(batch)
        ready, _origin = self._gate.feed(batch)
        self._apply(ready)

    def finish(self) -> None:
        """End of stream: records of events never closed are counted, not applied."""
        self.engine.mark_unterminated(self._gate.take_open())
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
            # Every sibling is consistent here (whole events only): all of them count.
            merged = engine.consolidated(siblings, self.depth)
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

    def result(self, source: str) -> RebuildResult:
        return RebuildResult(
            source=source, records=self.records, events=self.events, books=self.final_books()
        )


def rebuild_batches(
    batches: Iterable[np.ndarray],
    *,
    source: str,
    depth: int = 10,
    symbols: dict[int, str] | None = None,
    on_event: EventSink | None = None,
    workers: int = 1,
) -> RebuildResult:
    """Rebuild the books from `batches` (file order) and return the final books.

    workers > 1 without on_event: instruments are split over that many engines, each fed by a
    thread of its own (the compiled kernel releases the GIL), since books of different
    instruments are independent; the result is the same as with one.
    """
    if workers > 1 and on_event is None:
        return _rebuild_in_parallel(batches, source=source, depth=depth, symbols=symbols,
                                   workers=workers)  # fmt: skip
    rebuilder = BookRebuilder(depth=depth, symbols=symbols, on_event=on_event)
    for batch in batches:
        rebuilder.feed(batch)
    rebuilder.finish()
    return rebuilder.result(source)


#: Batches a worker may have queued before the reader waits for it (bounds memory).
_BACKLOG = 2


def _rebuild_in_parallel(
    batches: Iterable[np.ndarray],
    *,
    source: str,
    depth: int,
    symbols: dict[int, str] | None,
    workers: int,
) -> RebuildResult:
    """One BookRebuilder per group of instruments (instrument_id % workers), each on its own thread
    and fed in file order; their final books together are one BookRebuilder's."""
    rebuilders = [BookRebuilder(depth=depth, symbols=symbols) for _ in range(workers)]
    pools = [ThreadPoolExecutor(max_workers=1) for _ in range(workers)]
    pending: list[deque[Future[None]]] = [deque() for _ in range(workers)]
    try:
        for batch in batches:
            groups = batch["instrument_id"] % np.uint32(workers)
            for group, (rebuilder, pool, queued) in enumerate(
                zip(rebuilders, pools, pending, strict=True)
            ):
                part = take_records(batch, groups == group)
                if not len(part):
                    continue
                while len(queued) >= _BACKLOG:
                    queued.popleft().result()
                queued.append(pool.submit(rebuilder.feed, part))
        for queued in pending:
            while queued:
                queued.popleft().result()
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    result = RebuildResult(source=source)
    for rebuilder in rebuilders:
        rebuilder.finish()
        result.records += rebuilder.records
        result.events += rebuilder.events
        result.books.extend(rebuilder.final_books())
    result.books.sort(key=book_sort_key)
    return result
