"""Kafka messages -> table columns (pure: no I/O, no clocks).

One function per topic kind, each taking what a Kafka message carries (partition, offset, value,
headers) and returning the rows it adds to its table, as columns in the layout `sink.native`
writes. The wire formats are those of mbo_core.schemas:

* records -> mbo_records: one row per raw DBN record, keyed by (source_partition = the message's
  partition, source_offset = its offset, record_index = the record's index in the message);
  symbol from the `symbol` header. End-of-stream markers carry no records: nothing to insert.
* bbo -> bbo: one row per entry of the columnar JSON. The key is the records message it was
  computed from (the JSON's `source`) and the F_LAST record's index, NOT the bbo message's own
  offset, so a BBO event republished after a processor restart gets the same key again.
* snapshots -> book_snapshots: one row per snapshot in the message, levels as arrays, keyed by
  its `source` and record_index.

publisher_id null (consolidated book) is stored as 0, a null sequence as NULL, decimal prices
as Int64 1e-9 units (a null price, an empty side, as NULL). A message that does not follow its
schema raises DecodeError (the sink logs and skips it: retrying cannot fix it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

import numpy as np
import orjson

from mbo_core.prices import parse_price
from mbo_core.records import MBO_DTYPE
from mbo_core.schemas import BBO_SCHEMA, H_RECORDS, SNAPSHOT_SCHEMA, decode_records, header_map
from sink.native import Arrays, Column, Maps, Nullable, Strings, concat

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


class DecodeError(ValueError):
    """The message does not follow its topic's schema."""


# Codes of the mbo_records Enum8 columns (0001_initial.sql). A record with another code cannot
# be stored: the insert of its whole batch would fail, so its message is refused here instead.
ACTIONS = b"ACFMNRT"
SIDES = b"ABN"


def _lookup(codes: bytes) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(codes)] = True
    return table


_VALID_ACTION = _lookup(ACTIONS)
_VALID_SIDE = _lookup(SIDES)


@dataclass(frozen=True, slots=True)
class RecordChunk:
    """The raw records of one records message and where they came from. Columns are built per
    insert batch (`record_columns`), not per message: that is one numpy pass per field."""

    partition: int
    offset: int
    symbol: str
    sent_ns: int
    records: np.ndarray  # MBO_DTYPE, a read-only view of the message value

    @property
    def rows(self) -> int:
        return len(self.records)

    def columns(self) -> dict[str, Column]:
        return record_columns([self])


@dataclass(frozen=True, slots=True)
class EventRows:
    """The bbo or book_snapshots rows of one message."""

    kind: Kind
    rows: int
    sent_ns: int
    columns: dict[str, Column]


Decoded = RecordChunk | EventRows | None


def decode_message(
    kind: Kind,
    partition: int,
    offset: int,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]] | None,
) -> Decoded:
    """The rows one Kafka message adds to its table; None if it adds none (end of stream, or a
    records message without records)."""
    if kind is Kind.RECORDS:
        return decode_records_message(partition, offset, value, headers)
    try:
        return decode_bbo(value) if kind is Kind.BBO else decode_snapshot(value)
    except DecodeError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        # JSON of the right schema tag but wrong shapes somewhere the checks above missed.
        raise DecodeError(f"{kind.value} message of an unexpected shape: {exc!r}") from None


# ----------------------------------------------------------------------------- records


def decode_records_message(
    partition: int,
    offset: int,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]] | None,
) -> RecordChunk | None:
    header_list = list(headers or ())
    try:
        message = decode_records(value, header_list)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None
    records = message.records
    if message.end_of_stream or not len(records):
        return None
    declared = header_map(header_list).get(H_RECORDS)
    if declared is not None and declared.isdigit() and int(declared) != len(records):
        raise DecodeError(f"header {H_RECORDS}={declared.decode()} but {len(records)} records")
    if not _VALID_ACTION[records["action"]].all():
        bad = sorted({chr(c) for c in records["action"][~_VALID_ACTION[records["action"]]]})
        raise DecodeError(f"records with actions {bad} outside {ACTIONS.decode()}")
    if not _VALID_SIDE[records["side"]].all():
        bad = sorted({chr(c) for c in records["side"][~_VALID_SIDE[records["side"]]]})
        raise DecodeError(f"records with sides {bad} outside {SIDES.decode()}")
    return RecordChunk(
        partition=partition,
        offset=offset,
        symbol=message.symbol or "",
        sent_ns=message.sent_ns,
        records=records,
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
    records = np.concatenate([chunk.records for chunk in chunks]) if chunks else _NO_RECORDS
    counts = np.array([chunk.rows for chunk in chunks], dtype=np.int64)
    columns: dict[str, Column] = {}
    for name, dtype in RECORD_FIELDS:
        field = records[name]
        # Same-size reinterpretation (u8 ns -> Int64 ticks, u1 code -> Int8): timestamps below
        # 2^63 and ASCII codes below 128 keep their value.
        columns[name] = np.ascontiguousarray(field).view(dtype)
    columns["symbol"] = Strings(
        b"".join(Strings.encode_one(chunk.symbol) * chunk.rows for chunk in chunks),
        len(records),
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

#: Prices repeat a lot (a book quotes few distinct levels): parse each decimal string once.
parse_price_cached = lru_cache(maxsize=1 << 16)(parse_price)


def _load(value: bytes | None, schema: str) -> dict[str, Any]:
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != schema:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise DecodeError(f"not a {schema} message (schema {found!r})")
    return data


def _ints(values: Sequence[Any], dtype: type[np.integer[Any]], name: str) -> np.ndarray:
    try:
        return np.array(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise DecodeError(f"field {name}: {exc}") from None


def _nullable_ints(values: Sequence[Any], dtype: type[np.integer[Any]], name: str) -> Nullable:
    null = np.array([value is None for value in values], dtype=bool)
    return Nullable(_ints([0 if v is None else v for v in values], dtype, name), null)


def _prices(values: Sequence[Any], name: str) -> Nullable:
    try:
        parsed = [0 if text is None else parse_price_cached(text) for text in values]
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise DecodeError(f"field {name}: {exc}") from None
    null = np.array([text is None for text in values], dtype=bool)
    return Nullable(np.array(parsed, dtype=np.int64), null)


def _quality(counters: dict[str, Sequence[int]], rows: int) -> Maps:
    """The per-row quality Map of a columnar {counter: [value per row]} dict."""
    names = list(counters)
    if any(len(counters[name]) != rows for name in names):
        raise DecodeError("quality arrays differ in length from the other fields")
    # rows x counters, row-major: row 0's counters, then row 1's, ...
    values = _ints([counters[name] for name in names], np.uint64, "quality").reshape(
        len(names), rows
    )
    keys = b"".join(Strings.encode_one(name) for name in names)
    return Maps(
        offsets=np.arange(1, rows + 1, dtype=np.uint64) * np.uint64(len(names)),
        keys=Strings(keys * rows, rows * len(names)),
        values=np.ascontiguousarray(values.T).reshape(-1),
    )


BBO_ARRAYS = (
    "publisher_id", "record_index", "ts_event", "ts_recv", "sequence", "bid_price", "bid_size",
    "bid_count", "ask_price", "ask_size", "ask_count", "crossed", "locked",
)  # fmt: skip


def decode_bbo(value: bytes | None) -> EventRows | None:
    """bbo rows of one columnar mbo.bbo/1 message; None if it has no entries."""
    data = _load(value, BBO_SCHEMA)
    try:
        fields = {name: data[name] for name in BBO_ARRAYS}
        source = data["source"]
        partition, offset = int(source["partition"]), int(source["offset"])
        instrument_id, sent_ns = int(data["instrument_id"]), int(data["sent_ns"])
        quality = data.get("quality") or {}
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"bbo message without a valid field {exc}") from None
    rows = len(fields["record_index"])
    if any(not isinstance(v, list) or len(v) != rows for v in fields.values()):
        raise DecodeError("bbo arrays differ in length")
    if not rows:
        return None
    publishers = [0 if p is None else p for p in fields["publisher_id"]]
    columns: dict[str, Column] = {
        "instrument_id": np.full(rows, instrument_id, dtype=np.uint32),
        "publisher_id": _ints(publishers, np.uint16, "publisher_id"),
        "symbol": Strings.repeat(data.get("symbol") or "", rows),
        "ts_event": _ints(fields["ts_event"], np.int64, "ts_event"),
        "ts_recv": _ints(fields["ts_recv"], np.int64, "ts_recv"),
        "sequence": _nullable_ints(fields["sequence"], np.uint32, "sequence"),
        "source_partition": np.full(rows, partition, dtype=np.uint16),
        "source_offset": np.full(rows, offset, dtype=np.uint64),
        "record_index": _ints(fields["record_index"], np.uint32, "record_index"),
        "bid_price": _prices(fields["bid_price"], "bid_price"),
        "bid_size": _ints(fields["bid_size"], np.uint64, "bid_size"),
        "bid_count": _ints(fields["bid_count"], np.uint32, "bid_count"),
        "ask_price": _prices(fields["ask_price"], "ask_price"),
        "ask_size": _ints(fields["ask_size"], np.uint64, "ask_size"),
        "ask_count": _ints(fields["ask_count"], np.uint32, "ask_count"),
        "crossed": np.array(fields["crossed"], dtype=bool),
        "locked": np.array(fields["locked"], dtype=bool),
        "quality": _quality(quality, rows),
    }
    return EventRows(Kind.BBO, rows, sent_ns, columns)


def _levels(snapshots: list[Any], side: str) -> tuple[Arrays, Arrays, Arrays]:
    """One side's levels of several snapshots as Array columns (one array per snapshot)."""
    prices: list[int] = []
    sizes: list[int] = []
    counts: list[int] = []
    ends: list[int] = []
    try:
        for snapshot in snapshots:
            levels = snapshot[side]
            if not isinstance(levels, list):
                raise DecodeError(f"snapshot {side} is not a list")
            prices.extend(parse_price_cached(level["price"]) for level in levels)
            sizes.extend(level["size"] for level in levels)
            counts.extend(level["count"] for level in levels)
            ends.append(len(prices))
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise DecodeError(f"snapshot {side}: bad level ({exc})") from None
    end = np.array(ends, dtype=np.uint64)
    return (
        Arrays(end, np.array(prices, dtype=np.int64)),
        Arrays(end.copy(), _ints(sizes, np.uint64, f"{side} size")),
        Arrays(end.copy(), _ints(counts, np.uint32, f"{side} count")),
    )


def decode_snapshot(value: bytes | None) -> EventRows:
    """The book_snapshots rows of an mbo.snapshots/2 message, one per snapshot it carries."""
    data = _load(value, SNAPSHOT_SCHEMA)
    try:
        source = data["source"]
        snapshots = data["snapshots"]
        if not isinstance(snapshots, list) or not snapshots:
            raise DecodeError("snapshots message without snapshots")
        rows = len(snapshots)
        names = list(snapshots[0].get("quality") or {})
        quality: dict[str, Sequence[int]] = {
            name: [int(s["quality"][name]) for s in snapshots] for name in names
        }
        head: dict[str, Column] = {
            "instrument_id": _ints(
                [s["instrument_id"] for s in snapshots], np.uint32, "instrument_id"
            ),
            "publisher_id": _ints([s["publisher_id"] or 0 for s in snapshots], np.uint16, "pub"),
            "symbol": Strings.repeat(data.get("symbol") or "", rows),
            "ts_event": _ints([s["ts_event"] for s in snapshots], np.int64, "ts_event"),
            "ts_recv": _ints([s["ts_recv"] for s in snapshots], np.int64, "ts_recv"),
            "sequence": _nullable_ints([s["sequence"] for s in snapshots], np.uint32, "sequence"),
            "source_partition": _ints([source["partition"]] * rows, np.uint16, "source.partition"),
            "source_offset": _ints([source["offset"]] * rows, np.uint64, "source.offset"),
            "record_index": _ints(
                [s["record_index"] for s in snapshots], np.uint32, "record_index"
            ),
            "depth": _ints([data["depth"]] * rows, np.uint16, "depth"),
            "crossed": np.array([bool(s["crossed"]) for s in snapshots]),
            "locked": np.array([bool(s["locked"]) for s in snapshots]),
            "final": np.array([bool(s["final"]) for s in snapshots]),
        }
        sent_ns = int(data["sent_ns"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DecodeError(f"snapshot message without a valid field {exc}") from None
    bid_prices, bid_sizes, bid_counts = _levels(snapshots, "bids")
    ask_prices, ask_sizes, ask_counts = _levels(snapshots, "asks")
    columns: dict[str, Column] = {
        **head,
        "bid_prices": bid_prices,
        "bid_sizes": bid_sizes,
        "bid_counts": bid_counts,
        "ask_prices": ask_prices,
        "ask_sizes": ask_sizes,
        "ask_counts": ask_counts,
        "quality": _quality(quality, rows),
    }
    return EventRows(Kind.SNAPSHOT, rows, sent_ns, columns)


def event_columns(parts: Sequence[EventRows]) -> dict[str, Column]:
    """The columns of several messages' rows of one table, in order."""
    names = parts[0].columns.keys()
    return {name: concat([part.columns[name] for part in parts]) for name in names}
