"""Kafka messages -> table columns (pure: no I/O, no clocks).

One function per topic kind, each taking what a Kafka message carries (partition, offset, value,
headers) and returning the rows it adds to its table, as columns in the layout `sink.native`
writes. The wire formats are those of mbo_core/wire/ (decoded there, never here):

* records -> mbo_records: one row per raw DBN record, keyed by (source_partition = the message's
  partition, source_offset = its offset, record_index = the record's index in the message);
  symbol from the `symbol` header, the run (replay_id, replay_copy) from the `replay-id` and
  `replay-copy` headers. End-of-stream markers carry no records: nothing to insert.
* bbo -> bbo: one row per MBP-1 record. The key is the records message it was computed from
  (the `source-partition`/`source-offset` headers) and the F_LAST record's index (ext row), NOT
  the bbo message's own offset, so a BBO event republished after a processor restart gets the
  same key again.
* snapshots -> book_snapshots: one row per MBP-10 record, each side's defined levels as arrays,
  keyed like bbo.

The consolidated book has publisher_id 0 and a NULL sequence; an undefined best price (an empty
side) is NULL; the quality counters are one UInt64 column each. A message that does not follow
its schema raises mbo_core.wire.MalformedMessage (the sink dead-letters it: retrying cannot fix
it). The wire decoders refuse records with action or side codes outside DBN's, which are exactly
the mbo_records Enum8 columns' codes (0001_initial.sql): one such record would fail the insert of
its whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from mbo_core.prices import UNDEF_PRICE
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.records import MBO_DTYPE, join_records
from mbo_core.wire import EventMessage, decode_bbo, decode_records, decode_snapshots
from mbo_core.wire.layouts import EXT_CONSOLIDATED, EXT_CROSSED, EXT_FINAL, EXT_LOCKED
from sink.native import Arrays, Column, Dictionary, Nullable

TS = np.dtype(np.int64)  # DateTime64(9) travels as Int64 nanoseconds


class Kind(StrEnum):
    """A topic's kind; the value is the `kind` label of the sink's end-to-end latency metric."""

    RECORDS = "mbo"
    BBO = "bbo"
    SNAPSHOT = "snapshot"


TABLES: dict[Kind, str] = {
    Kind.RECORDS: "mbo_records",
    Kind.BBO: "bbo",
    Kind.SNAPSHOT: "book_snapshots",
}


@dataclass(frozen=True, slots=True)
class RecordChunk:
    """The raw records of one records message and where they came from. Columns are built per
    insert batch (`record_columns`), not per message: that is one numpy pass per field."""

    partition: int
    offset: int
    symbol: str
    sent_ns: int
    records: np.ndarray  # MBO_DTYPE, a read-only view of the message value
    replay_id: str = ""
    replay_copy: int = 0

    @property
    def rows(self) -> int:
        return len(self.records)

    def columns(self) -> dict[str, Column]:
        return record_columns([self])


@dataclass(frozen=True, slots=True)
class EventRows:
    """The bbo or book_snapshots rows of one message: views of its records and ext rows.
    Columns are built per insert batch (`event_columns`), like the records'."""

    kind: Kind
    message: EventMessage

    @property
    def rows(self) -> int:
        return len(self.message)

    @property
    def sent_ns(self) -> int:
        return self.message.context.sent_ns

    def columns(self) -> dict[str, Column]:
        return event_columns([self])


Decoded = RecordChunk | EventRows | None


def decode_message(
    kind: Kind,
    partition: int,
    offset: int,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]] | None,
    key: bytes | None = None,
) -> Decoded:
    """The rows one Kafka message adds to its table; None if it adds none (end of stream, or a
    records message without records). key: the message's, checked against its instrument."""
    if kind is Kind.RECORDS:
        return decode_records_message(partition, offset, value, headers, key)
    decode = decode_bbo if kind is Kind.BBO else decode_snapshots
    message = decode(value, headers, key)
    return EventRows(kind, message) if len(message) else None


# ----------------------------------------------------------------------------- records


def decode_records_message(
    partition: int,
    offset: int,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]] | None,
    key: bytes | None = None,
) -> RecordChunk | None:
    message = decode_records(value, headers, key)
    records = message.records
    if message.end_of_stream or not len(records):
        return None
    return RecordChunk(
        partition=partition,
        offset=offset,
        symbol=message.symbol or "",
        sent_ns=message.sent_ns,
        records=records,
        replay_id=message.replay_id,
        replay_copy=message.replay_copy,
    )


#: mbo_records columns taken from the DBN record as they are (wire dtype of each).
RECORD_FIELDS: tuple[tuple[str, np.dtype], ...] = (
    ("ts_recv", TS),
    ("ts_event", TS),
    ("ts_in_delta", np.dtype(np.int32)),
    ("sequence", np.dtype(np.uint32)),
    ("publisher_id", np.dtype(np.uint16)),
    ("instrument_id", np.dtype(np.uint32)),
    ("order_id", np.dtype(np.uint64)),
    ("price", np.dtype(np.int64)),
    ("size", np.dtype(np.uint32)),
    ("flags", np.dtype(np.uint8)),
    ("channel_id", np.dtype(np.uint8)),
    ("action", np.dtype(np.int8)),  # Enum8 codes: the ASCII byte
    ("side", np.dtype(np.int8)),
)


def record_columns(chunks: Sequence[RecordChunk]) -> dict[str, Column]:
    """mbo_records columns of the records of `chunks`, in order."""
    records = join_records([chunk.records for chunk in chunks]) if chunks else _NO_RECORDS
    counts = np.array([chunk.rows for chunk in chunks], dtype=np.int64)
    columns: dict[str, Column] = {}
    for name, dtype in RECORD_FIELDS:
        field = records[name]
        # Same-size reinterpretation (u8 ns -> Int64 ticks, u1 code -> Int8): timestamps below
        # 2^63 and ASCII codes below 128 keep their value.
        columns[name] = np.ascontiguousarray(field).view(dtype)
    columns["symbol"] = Dictionary.repeated([chunk.symbol for chunk in chunks], counts)
    columns["replay_id"] = Dictionary.repeated([chunk.replay_id for chunk in chunks], counts)
    columns["replay_copy"] = np.repeat(
        np.array([chunk.replay_copy for chunk in chunks], dtype=np.uint32), counts
    )
    columns["source_partition"] = np.repeat(
        np.array([chunk.partition for chunk in chunks], dtype=np.uint16), counts
    )
    columns["source_offset"] = np.repeat(
        np.array([chunk.offset for chunk in chunks], dtype=np.uint64), counts
    )
    starts = np.cumsum(counts) - counts
    columns["record_index"] = (
        np.arange(len(records), dtype=np.int64) - np.repeat(starts, counts)
    ).astype(np.uint32)
    return columns


_NO_RECORDS = np.zeros(0, dtype=MBO_DTYPE)


# ------------------------------------------------------------------------ bbo, snapshots


def _sizes(values: np.ndarray) -> np.ndarray:
    widened: np.ndarray = values.astype(np.uint64)
    return widened


def _price(values: np.ndarray) -> Nullable:
    return Nullable(np.ascontiguousarray(values), values == UNDEF_PRICE)


def _levels(levels: np.ndarray, prefix: str) -> dict[str, Column]:
    """One side's levels of MBP-10 records as Array columns: the defined levels of each row
    (price not UNDEF_PRICE), best first; row-major masking keeps their order."""
    prices = levels[f"{prefix}_px"]
    defined = prices != UNDEF_PRICE
    ends = np.cumsum(np.count_nonzero(defined, axis=1), dtype=np.uint64)
    return {
        f"{prefix}_prices": Arrays(ends, prices[defined]),
        f"{prefix}_sizes": Arrays(ends, levels[f"{prefix}_sz"][defined].astype(np.uint64)),
        f"{prefix}_counts": Arrays(ends, levels[f"{prefix}_ct"][defined]),
    }


def event_columns(parts: Sequence[EventRows]) -> dict[str, Column]:
    """The bbo or book_snapshots columns of several messages' rows (all of one kind), in order:
    one numpy pass per field over the messages' records joined, no Python per row."""
    records = join_records([part.message.records for part in parts])
    ext = join_records([part.message.ext for part in parts])
    counts = np.array([part.rows for part in parts], dtype=np.int64)
    contexts = [part.message.context for part in parts]
    consolidated = (ext["flags"] & EXT_CONSOLIDATED) != 0
    flags = ext["flags"]
    columns: dict[str, Column] = {
        "instrument_id": np.ascontiguousarray(records["instrument_id"]),
        "publisher_id": np.ascontiguousarray(records["publisher_id"]),
        "symbol": Dictionary.repeated([c.symbol or "" for c in contexts], counts),
        "replay_id": Dictionary.repeated([c.replay_id for c in contexts], counts),
        "replay_copy": np.repeat(
            np.array([c.replay_copy for c in contexts], dtype=np.uint32), counts
        ),
        "ts_event": np.ascontiguousarray(records["ts_event"]).view(TS),
        "ts_recv": np.ascontiguousarray(records["ts_recv"]).view(TS),
        "sequence": Nullable(np.ascontiguousarray(records["sequence"]), consolidated),
        "source_partition": np.repeat(
            np.array([c.source_partition for c in contexts], dtype=np.uint16), counts
        ),
        "source_offset": np.repeat(
            np.array([c.source_offset for c in contexts], dtype=np.uint64), counts
        ),
        "record_index": np.ascontiguousarray(ext["record_index"]),
        "crossed": (flags & EXT_CROSSED) != 0,
        "locked": (flags & EXT_LOCKED) != 0,
    }
    quality = ext["quality"]
    for i, name in enumerate(QUALITY_FIELDS):
        columns[name] = np.ascontiguousarray(quality[:, i])
    levels = records["levels"]
    if parts[0].kind is Kind.BBO:
        best = levels[:, 0]
        columns.update(
            bid_price=_price(best["bid_px"]),
            bid_size=_sizes(best["bid_sz"]),
            bid_count=np.ascontiguousarray(best["bid_ct"]),
            ask_price=_price(best["ask_px"]),
            ask_size=_sizes(best["ask_sz"]),
            ask_count=np.ascontiguousarray(best["ask_ct"]),
        )
    else:
        columns.update(_levels(levels, "bid"))
        columns.update(_levels(levels, "ask"))
        columns["depth"] = np.repeat(
            np.array([part.message.depth for part in parts], dtype=np.uint16), counts
        )
        columns["final"] = (flags & EXT_FINAL) != 0
    return columns
