"""File and JSON schemas: the book JSON of `mbo book`, the API and the generator.

Book JSON (`mbo book -o final.json` books, `--events` lines, `mbo generate --expect`, snapshots)::

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

The Kafka topics' wire formats are in mbo_core/wire/ (binary DBN records, one module per
topic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mbo_core.prices import format_price

if TYPE_CHECKING:  # the engine loads compiled code; stages that only read messages skip it
    from mbo_core.book import BookView

BookJson = dict[str, Any]


# ------------------------------------------------------------------------- book JSON


def levels_json(levels: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"price": format_price(int(price)), "size": int(size), "count": int(count)}
        for price, size, count in levels.tolist()
    ]


def book_json(view: BookView, symbol: str | None) -> BookJson:
    """The JSON object of a book."""
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
