"""Wire and file schemas: the JSON shapes other programs read. One place, documented here.

Book JSON (`mbo book -o final.json` books, `--events` lines, `mbo generate --expect`):

    {"instrument_id": int, "publisher_id": int | null (null: consolidated across publishers),
     "symbol": str | null, "ts_event": int (ns since the UNIX epoch), "ts_recv": int,
     "sequence": int | null,
     "bids": [{"price": "<exact decimal>", "size": int, "count": int}, ...]  best first,
     "asks": [...] best first,
     "crossed": bool (best bid > best ask), "locked": bool (best bid == best ask),
     "quality": {counter: int, ...}  (see mbo_core.book.QUALITY_FIELDS)}

`final.json`: {"source": str, "records": int, "events": int, "books": [book, ...]} with books
sorted by (instrument_id, publisher_id), an instrument's consolidated book (publisher_id null)
after its publishers' books, present only where the instrument has several publishers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mbo_core.book import BookView
from mbo_core.prices import format_price

BookJson = dict[str, Any]


def levels_json(levels: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"price": format_price(int(price)), "size": int(size), "count": int(count)}
        for price, size, count in levels.tolist()
    ]


def book_json(view: BookView, symbol: str | None) -> BookJson:
    return {
        "instrument_id": view.instrument_id,
        "publisher_id": view.publisher_id,
        "symbol": symbol,
        "ts_event": view.ts_event,
        "ts_recv": view.ts_recv,
        "sequence": view.sequence,
        "bids": levels_json(view.bids),
        "asks": levels_json(view.asks),
        "crossed": view.crossed,
        "locked": view.locked,
        "quality": dict(view.quality),
    }


def book_sort_key(book: BookJson) -> tuple[int, int, int]:
    """Order of books in final.json: by instrument, publishers first, then the consolidated one."""
    publisher = book["publisher_id"]
    return (book["instrument_id"], publisher is None, publisher or 0)
