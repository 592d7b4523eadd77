"""The generator's true final books in the JSON shape of `mbo book -o` (mbo_core.schemas).

Built from the generator's own books, not by replaying the file: that is what makes it an
independent expectation for the book engine. Per book: its levels (top `depth`, 0 = all), the
ts_event / ts_recv / sequence of its last F_LAST record, data-quality counters all zero (the
generator knows every order). Per instrument with several publishers, a consolidated book
computed here from each publisher's full book: levels merged by price with sizes and order
counts summed, the timestamps of the publisher book with the latest (ts_recv, ts_event), no
sequence.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from generator.core import BookState
from mbo_core.book import QUALITY_FIELDS, BookView
from mbo_core.schemas import BookJson, book_json, book_sort_key


def final_json(
    states: list[BookState], *, source: str, records: int, events: int, depth: int = 10
) -> dict[str, Any]:
    """{"source", "records", "events", "books"} from books with all their levels (depth 0)."""
    books: list[BookJson] = []
    by_instrument: dict[int, list[BookState]] = defaultdict(list)
    for state in states:
        by_instrument[state.instrument.instrument_id].append(state)
        books.append(book_json(_view(state, depth), state.instrument.symbol))
    for instrument_states in by_instrument.values():
        if len(instrument_states) > 1:
            books.append(
                book_json(
                    _consolidated(instrument_states, depth), instrument_states[0].instrument.symbol
                )
            )
    books.sort(key=book_sort_key)
    return {"source": source, "records": records, "events": events, "books": books}


def _zero_quality() -> dict[str, int]:
    return dict.fromkeys(QUALITY_FIELDS, 0)


def _top(levels: np.ndarray, depth: int) -> np.ndarray:
    return levels if depth <= 0 else levels[:depth]


def _view(state: BookState, depth: int) -> BookView:
    return BookView(
        instrument_id=state.instrument.instrument_id,
        publisher_id=state.publisher_id,
        ts_event=state.ts_event,
        ts_recv=state.ts_recv,
        sequence=state.sequence,
        bids=_top(state.bids, depth),
        asks=_top(state.asks, depth),
        quality=_zero_quality(),
    )


def _consolidated(states: list[BookState], depth: int) -> BookView:
    latest = max(states, key=lambda s: (s.ts_recv, s.ts_event))
    return BookView(
        instrument_id=latest.instrument.instrument_id,
        publisher_id=None,
        ts_event=latest.ts_event,
        ts_recv=latest.ts_recv,
        sequence=None,
        bids=_top(_merged([s.bids for s in states], best_first_descending=True), depth),
        asks=_top(_merged([s.asks for s in states], best_first_descending=False), depth),
        quality=_zero_quality(),
    )


def _merged(sides: list[np.ndarray], *, best_first_descending: bool) -> np.ndarray:
    totals: dict[int, list[int]] = {}
    for levels in sides:
        for price, size, count in levels.tolist():
            total = totals.setdefault(price, [0, 0])
            total[0] += size
            total[1] += count
    prices = sorted(totals, reverse=best_first_descending)
    rows = [(p, totals[p][0], totals[p][1]) for p in prices]
    return np.array(rows, dtype=np.int64).reshape(len(rows), 3)
