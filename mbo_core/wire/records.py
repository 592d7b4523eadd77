"""The records topic (`mbo.records`): raw DBN MBO records of one instrument per message.

The value is raw DBN MBO records (rtype 0xA0, 56 bytes each, little endian, exactly as in a DBN
v1-v3 body: `np.frombuffer(value, mbo_core.records.MBO_DTYPE)` or
`databento_dbn.DBNDecoder(has_metadata=False)` read it), whole events of ONE instrument in file
order, each ending with an F_LAST record (an instrument with one publisher never has an event
split across messages; with several, one publisher's event may go on in the next message while
another's closes: consumers hold its records until its F_LAST, mbo_core/book/events.py).

Headers: `mbo-schema: dbn.mbo`, `dbn-version: 3`, `dataset`, `symbol`, `sent-ns` (producer wall
clock at send, ns since the epoch), `records` (the count), `replay-id` (the replay; a replay resumed
after its producer died keeps it), `replay-copy` (1, 2, ... : the copy of a looped replay) and
`instrument-records` (records of the message's instrument the replay has sent, this message's
included: where a resumed replay goes on from). A (replay-id, replay-copy) pair is a **run**:
the processor starts an instrument's books empty when its run changes, and the history tables
keep each run's rows apart (docs/storage.md). Where a file
(or one copy of a looped replay) ends mid-event, the instrument's records after its last F_LAST
follow as one more message
with header `unterminated-tail: 1` (it does not end with F_LAST): source data for the records
table, counted as `unterminated_event_records` and never applied to a book. End of a replay: an
empty value with header `end-of-stream: 1`, one per instrument.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mbo_core.records import MBO_DTYPE, first_invalid_record
from mbo_core.wire.headers import (
    DBN_VERSION,
    H_DATASET,
    H_DBN_VERSION,
    H_END_OF_STREAM,
    H_INSTRUMENT_RECORDS,
    H_RECORDS,
    H_REPLAY_COPY,
    H_REPLAY_ID,
    H_SCHEMA,
    H_SENT_NS,
    H_SYMBOL,
    H_UNTERMINATED_TAIL,
    MalformedMessage,
    check_dbn_version,
    header_int_in,
    header_map,
    key_instrument,
)

RECORDS_SCHEMA = "dbn.mbo"


def _replay_headers(
    replay_id: str | None, replay_copy: int, instrument_records: int
) -> list[tuple[str, bytes]]:
    if replay_id is None:
        return []
    return [
        (H_REPLAY_ID, replay_id.encode()),
        (H_REPLAY_COPY, str(replay_copy).encode()),
        (H_INSTRUMENT_RECORDS, str(instrument_records).encode()),
    ]


def records_headers(
    *,
    dataset: str,
    symbol: str | None,
    sent_ns: int,
    records: int,
    unterminated_tail: bool = False,
    replay_id: str | None = None,
    replay_copy: int = 1,
    instrument_records: int = 0,
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
    return headers + _replay_headers(replay_id, replay_copy, instrument_records)


def end_of_stream_headers(
    *,
    dataset: str,
    symbol: str | None,
    sent_ns: int,
    replay_id: str | None = None,
    replay_copy: int = 1,
    instrument_records: int = 0,
) -> list[tuple[str, bytes]]:
    return [
        (H_SCHEMA, RECORDS_SCHEMA.encode()),
        (H_DATASET, dataset.encode()),
        (H_SYMBOL, (symbol or "").encode()),
        (H_SENT_NS, str(sent_ns).encode()),
        (H_END_OF_STREAM, b"1"),
        *_replay_headers(replay_id, replay_copy, instrument_records),
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
    #: The message's instrument: its key's, else its records'; None for a message with neither.
    instrument_id: int | None = None
    #: The run the message belongs to ("" and 0 for messages of producers without replay ids).
    replay_id: str = ""
    replay_copy: int = 0


def decode_records(
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]] | None,
    key: bytes | None = None,
) -> RecordsMessage:
    """A records message, checked whole before anyone acts on it; MalformedMessage saying what
    is wrong if it is not one: schema or DBN version headers, a length that is not whole
    56-byte records, a record that is not a plain MBO record (rtype, length field), an action or
    side code outside DBN's, a `records` header that disagrees, or a key (when given) that is
    not the instrument of every record. One bad record makes the whole message bad: consumers
    dead-letter it whole rather than act on part of it."""
    h = header_map(headers)
    schema = h.get(H_SCHEMA)
    if schema is not None and schema != RECORDS_SCHEMA.encode():
        raise MalformedMessage("schema", f"not a records message: {H_SCHEMA}={schema[:40]!r}")
    check_dbn_version(h)
    body = value or b""
    if len(body) % MBO_DTYPE.itemsize:
        raise MalformedMessage(
            "length", f"records message of {len(body)} bytes: not whole 56-byte MBO records"
        )
    records = np.frombuffer(body, dtype=MBO_DTYPE)
    instrument = key_instrument(key)
    end_of_stream = h.get(H_END_OF_STREAM) == b"1"
    if end_of_stream and len(records):
        raise MalformedMessage("length", f"end-of-stream marker with {len(records)} records")
    declared = h.get(H_RECORDS)
    if declared is not None and (not declared.isdigit() or int(declared) != len(records)):
        raise MalformedMessage(
            "count",
            f"header {H_RECORDS}={declared[:20].decode(errors='replace')} "
            f"but {len(records)} records",
        )
    if len(records):
        instrument = _check_records(records, instrument)
    try:
        symbol = h.get(H_SYMBOL, b"").decode() or None
        sent_ns = int(h.get(H_SENT_NS, b"0") or 0)
        replay_id = h.get(H_REPLAY_ID, b"").decode()
    except ValueError as exc:  # not UTF-8, not an integer
        raise MalformedMessage(
            "header", f"header {H_SYMBOL}, {H_SENT_NS} or {H_REPLAY_ID}: {exc}"
        ) from None
    replay_copy = header_int_in(h, H_REPLAY_COPY, 0, 1 << 32) if H_REPLAY_COPY in h else 0
    return RecordsMessage(
        records=records,
        sent_ns=sent_ns,
        symbol=symbol,
        end_of_stream=end_of_stream,
        unterminated_tail=h.get(H_UNTERMINATED_TAIL) == b"1",
        instrument_id=instrument,
        replay_id=replay_id,
        replay_copy=replay_copy,
    )


def _check_records(records: np.ndarray, instrument: int | None) -> int:
    """The records' instrument (the key's `instrument` when given); MalformedMessage naming the
    first bad record."""
    invalid = first_invalid_record(records)
    if invalid is not None:
        index, reason, detail = invalid
        raise MalformedMessage(reason, f"record {index}: {detail}")
    instruments = records["instrument_id"]
    expected = int(instruments[0]) if instrument is None else instrument
    bad = instruments != expected
    if bad.any():
        i = int(np.argmax(bad))
        raise MalformedMessage(
            "key",
            f"record {i}: instrument {instruments[i]} in a message of instrument {expected}"
            + (" (its key)" if instrument is not None else " (its first record)"),
        )
    return expected
