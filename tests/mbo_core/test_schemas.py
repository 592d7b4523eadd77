"""The book JSON shape that `mbo book`, the generator's --expect and the API share."""

from __future__ import annotations

import json

import numpy as np

from mbo_core.book import QUALITY_FIELDS, BookView
from mbo_core.schemas import book_json, book_sort_key


def view(publisher_id: int | None, bids: list[list[int]], asks: list[list[int]]) -> BookView:
    return BookView(
        instrument_id=7,
        publisher_id=publisher_id,
        ts_event=10,
        ts_recv=11,
        sequence=None if publisher_id is None else 3,
        bids=np.array(bids, dtype=np.int64).reshape(-1, 3),
        asks=np.array(asks, dtype=np.int64).reshape(-1, 3),
        quality=dict.fromkeys(QUALITY_FIELDS, 0),
    )


def test_book_json_fields_and_exact_prices() -> None:
    out = book_json(view(1, [[100_250_000_000, 5, 2]], [[100_000_000_000, 1, 1]]), "CLX5")
    assert out == {
        "instrument_id": 7,
        "publisher_id": 1,
        "symbol": "CLX5",
        "ts_event": 10,
        "ts_recv": 11,
        "sequence": 3,
        "bids": [{"price": "100.25", "size": 5, "count": 2}],
        "asks": [{"price": "100", "size": 1, "count": 1}],
        "crossed": True,
        "locked": False,
        "quality": dict.fromkeys(QUALITY_FIELDS, 0),
    }
    json.dumps(out)  # plain JSON types only


def test_consolidated_books_sort_after_their_publishers() -> None:
    books = [book_json(view(p, [], []), None) for p in (None, 2, 1)]
    assert [b["publisher_id"] for b in sorted(books, key=book_sort_key)] == [1, 2, None]
