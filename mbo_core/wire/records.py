"""The records topic (`mbo.records`): raw DBN MBO records of one instrument per message.

The value is raw DBN MBO records (rtype 0xA0, 56 bytes each, little endian, exactly as in a DBN
v1-v3 body: `np.frombuffer(value, mbo_core.records.MBO_DTYPE)` or
`databento_dbn.DBNDecoder(has_metadata=False)` read it), whole events of ONE instrument in file
order, each ending with an F_LAST record (an instrument with one publisher never has an event
split across messages; with several, one publisher's event may go on in the next message while
another's closes: consumers hold its records until its F_LAST, mbo_core/book/events.py).

Headers: `mbo-schema: dbn.mbo`, `dbn-version: 3`, `dataset`, `symbol`, `sent-ns` (producer wall
clock at send, ns since the epoch), `records` (the count). Where a file (or one copy of a looped
replay) ends mid-event, the instrument's records after its last F_LAST follow as one more message
with header `unterminated-tail: 1` (it does not end with F_LAST): source data for the records
table, counted as `unterminated_event_records` and never applied to a book. End of a replay: an
empty value with header `end-of-stream: 1`, one per instrument.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mbo_core.records import MBO_DTYPE
from mbo_core.wire.headers import (
    DBN_VERSION,
    H_DATASET,
    H_DBN_VERSION,
    H_END_OF_STREAM,
    H_RECORDS,
    H_SCHEMA,
    H_SENT_NS,
    H_SYMBOL,
    H_UNTERMINATED_TAIL,
    check_dbn_version,
    header_map,
)

RECORDS_SCHEMA = "dbn.mbo"


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


def decode_records(
    value: bytes | None, headers: Iterable[tuple[str, bytes]] | None
) -> RecordsMessage:
    """A records message; ValueError if it is not one (wrong schema header or length)."""
    h = header_map(headers)
    schema = h.get(H_SCHEMA)
    if schema is not None and schema != RECORDS_SCHEMA.encode():
        raise ValueError(f"not a records message: {H_SCHEMA}={schema!r}")
    check_dbn_version(h)
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
