"""Wire and file schemas: every shape other programs read, documented in one place.

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

Kafka topics (names in settings; every message is keyed by the instrument id as ASCII decimal,
so one instrument's messages stay in order in one partition):

* records (`mbo.records`): the value is raw DBN MBO records (rtype 0xA0, 56 bytes each, little
  endian, exactly as in a DBN v1-v3 body: `np.frombuffer(value, mbo_core.records.MBO_DTYPE)` or
  `databento_dbn.DBNDecoder(has_metadata=False)` read it), whole events of ONE instrument in file
  order, each ending with an F_LAST record (an instrument with one publisher never has an
  event split across messages; with several, one publisher's event may go on in the next
  message while another's closes: consumers hold its records until its F_LAST,
  mbo_core/book/events.py). Headers:
  `mbo-schema: dbn.mbo`, `dbn-version: 3`, `dataset`, `symbol`, `sent-ns` (producer wall clock
  at send, ns since the epoch, ASCII), `records` (count, ASCII). Where a file (or one copy of a
  looped replay) ends mid-event, the instrument's records after its last F_LAST follow as one
  more message with header `unterminated-tail: 1` (it does not end with F_LAST): source data for
  the records table, counted as `unterminated_event_records` and never applied to a book. End of
  a replay: an empty value with header `end-of-stream: 1`, one per instrument.
* bbo (`mbo.bbo`): one JSON message per records message whose events changed a best level,
  columnar (one array per field, one entry per change, in event order)::

      {"schema": "mbo.bbo/1", "instrument_id": int, "symbol": str | null,
       "source": {"partition": int, "offset": int}, "sent_ns": int (the records message's),
       "publisher_id": [int | null, ...]  (null: consolidated across publishers),
       "record_index": [int, ...]  (the F_LAST record's index in the records message),
       "ts_event": [...], "ts_recv": [...], "sequence": [int | null, ...],
       "bid_price": ["<decimal>" | null, ...], "bid_size": [...], "bid_count": [...],
       "ask_price": [...], "ask_size": [...], "ask_count": [...],
       "crossed": [bool, ...], "locked": [bool, ...],
       "quality": {counter: [int, ...], ...}}

* snapshots (`mbo.snapshots`): one JSON message per records message whose events produced depth
  snapshots (like bbo, so a dense stream does not cost a Kafka message per snapshot)::

      {"schema": "mbo.snapshots/2", "instrument_id": int, "symbol": str | null,
       "source": {"partition": int, "offset": int}, "sent_ns": int, "depth": int,
       "snapshots": [book JSON + {"record_index": int, "final": bool}, ...]}  in event order

  `final`: the book's last state, published at the instrument's end-of-stream marker
  (record_index 0 then).

Outputs carry only values derived from their input message, so reprocessing a records message
reproduces byte-identical output messages; consumers deduplicate on (source, record_index,
publisher_id). Wall-clock stamps of the processor travel in headers (`processed-ns`).
A consumer that wants the latest book of an instrument takes the last snapshot of the last
message (per publisher_id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mbo_core.prices import format_price
from mbo_core.records import MBO_DTYPE

if TYPE_CHECKING:  # the engine loads compiled code; stages that only read messages skip it
    from mbo_core.book import BookView

BookJson = dict[str, Any]
Headers = Sequence[tuple[str, bytes]]

BBO_SCHEMA = "mbo.bbo/1"
SNAPSHOT_SCHEMA = "mbo.snapshots/2"
RECORDS_SCHEMA = "dbn.mbo"
DBN_VERSION = 3

H_SCHEMA = "mbo-schema"
H_DBN_VERSION = "dbn-version"
H_DATASET = "dataset"
H_SYMBOL = "symbol"
H_SENT_NS = "sent-ns"
H_RECORDS = "records"
H_END_OF_STREAM = "end-of-stream"
H_UNTERMINATED_TAIL = "unterminated-tail"
H_PROCESSED_NS = "processed-ns"


# ------------------------------------------------------------------------- book JSON


def levels_json(levels: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"price": format_price(int(price)), "size": int(size), "count": int(count)}
        for price, size, count in levels.tolist()
    ]


def book_json(view: BookView, symbol: str | None, *, encoded_levels: bool = False) -> BookJson:
    """The JSON object of a book. encoded_levels: bids and asks as ready JSON text
    (`orjson.Fragment`, for messages that are only serialized; same bytes once dumped)."""
    levels: Callable[[np.ndarray], Any]
    if encoded_levels:
        # Imported here: it compiles with numba, which the producer (a user of this module's
        # wire formats) does not need and would pay ~1 s of start-up for.
        from mbo_core.json_columns import levels_json as levels  # noqa: PLC0415
    else:
        levels = levels_json
    return {
        "instrument_id": view.instrument_id,
        "publisher_id": view.publisher_id,
        "symbol": symbol,
        "ts_event": view.ts_event,
        "ts_recv": view.ts_recv,
        "sequence": view.sequence,
        "bids": levels(view.bids),
        "asks": levels(view.asks),
        "crossed": view.crossed,
        "locked": view.locked,
        "quality": dict(view.quality),
    }


def book_sort_key(book: BookJson) -> tuple[int, int, int]:
    """Order of books in final.json: by instrument, publishers first, then the consolidated one."""
    publisher = book["publisher_id"]
    return (book["instrument_id"], publisher is None, publisher or 0)


# ----------------------------------------------------------------------- records topic


def instrument_key(instrument_id: int) -> bytes:
    return str(instrument_id).encode()


def records_headers(
    *,
    dataset: str,
    symbol: str | None,
    sent_ns: int,
    records: int,
    unterminated_tail: bool = False,
) -> list[tuple[str, bytes]]:
    headers = [
        (H_SCHEMA, RECORDS_SCHEMA.encode()),
        (H_DBN_VERSION, str(DBN_VERSION).encode()),
        (H_DATASET, dataset.encode()),
        (H_SYMBOL, (symbol or "").encode()),
        (H_SENT_NS, str(sent_ns).encode()),
        (H_RECORDS, str(records).encode()),
    ]
    if unterminated_tail:
        headers.append((H_UNTERMINATED_TAIL, b"1"))
    return headers


def end_of_stream_headers(
    *, dataset: str, symbol: str | None, sent_ns: int
) -> list[tuple[str, bytes]]:
    return [
        (H_SCHEMA, RECORDS_SCHEMA.encode()),
        (H_DATASET, dataset.encode()),
        (H_SYMBOL, (symbol or "").encode()),
        (H_SENT_NS, str(sent_ns).encode()),
        (H_END_OF_STREAM, b"1"),
    ]


@dataclass(frozen=True, slots=True)
class RecordsMessage:
    """A decoded records-topic message."""

    records: np.ndarray  # MBO_DTYPE, read-only view of the message value
    sent_ns: int
    symbol: str | None
    end_of_stream: bool
    #: The records of the instrument's events still open after this message never close (the
    #: file, or one copy of a looped replay, ended mid-event): count them, never apply them.
    unterminated_tail: bool = False


def header_map(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, bytes]:
    return dict(headers or ())


def decode_records(
    value: bytes | None, headers: Iterable[tuple[str, bytes]] | None
) -> RecordsMessage:
    """A records message; ValueError if it is not one (wrong schema header or length)."""
    h = header_map(headers)
    schema = h.get(H_SCHEMA)
    if schema is not None and schema != RECORDS_SCHEMA.encode():
        raise ValueError(f"not a records message: {H_SCHEMA}={schema!r}")
    body = value or b""
    if len(body) % MBO_DTYPE.itemsize:
        raise ValueError(f"records message of {len(body)} bytes: not whole 56-byte MBO records")
    symbol = h.get(H_SYMBOL, b"").decode() or None
    return RecordsMessage(
        records=np.frombuffer(body, dtype=MBO_DTYPE),
        sent_ns=int(h.get(H_SENT_NS, b"0") or 0),
        symbol=symbol,
        end_of_stream=h.get(H_END_OF_STREAM) == b"1",
        unterminated_tail=h.get(H_UNTERMINATED_TAIL) == b"1",
    )
