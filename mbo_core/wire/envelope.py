"""What the two event topics (bbo, snapshots) share: DBN MBP records as the value, the message's
context in headers, and one `EXT_DTYPE` row per record in the `ext` header.

Headers of an event message (ASCII unless noted)::

    mbo-schema        dbn.mbp-1 (bbo) | dbn.mbp-10 (snapshots): the value's record layout
    dbn-version       3
    ext-schema        mbo.ext/1: the layout of `ext`
    ext               binary, len = 72 x records: EXT_DTYPE rows (mbo_core/wire/layouts.py)
    instrument-id     the instrument (every record's instrument_id; also the key)
    symbol            raw symbol, empty if unknown
    source-partition  records-topic partition of the message these events come from
    source-offset     its offset there
    sent-ns           that records message's sent-ns
    replay-id         that records message's replay-id (absent: none)
    replay-copy       and replay-copy: the run the events belong to
    depth             levels per side asked for (snapshots; 1 for bbo)
    processed-ns      processor wall clock at publish (added by the processor)

A row's identity is (source-partition, source-offset, record_index, publisher_id): outputs carry
only values derived from their input message, so a republished message reproduces the same rows
and consumers collapse them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from mbo_core.prices import UNDEF_PRICE
from mbo_core.wire.headers import (
    DBN_VERSION,
    H_DBN_VERSION,
    H_DEPTH,
    H_EXT,
    H_EXT_SCHEMA,
    H_INSTRUMENT_ID,
    H_REPLAY_COPY,
    H_REPLAY_ID,
    H_SCHEMA,
    H_SENT_NS,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SYMBOL,
    MalformedMessage,
    check_dbn_version,
    header_int_in,
    header_map,
    key_instrument,
)
from mbo_core.wire.layouts import (
    EXT_CONSOLIDATED,
    EXT_CROSSED,
    EXT_DTYPE,
    EXT_FINAL,
    EXT_LOCKED,
    EXT_SCHEMA,
    LEVEL_SIZE_MAX,
    MBP10_DEPTH,
)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A Kafka message value and its headers."""

    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class EventContext:
    """Where a message's events come from: the same for every row of the message."""

    instrument_id: int
    symbol: str | None
    source_partition: int
    source_offset: int
    sent_ns: int
    #: The run of that records message (its replay-id and replay-copy; "" and 0 without).
    replay_id: str = ""
    replay_copy: int = 0


@dataclass(frozen=True, slots=True)
class EventMessage:
    """A decoded bbo or snapshots message: read-only views of its value and `ext` header."""

    schema: str
    context: EventContext
    depth: int
    records: np.ndarray  # MBP1_DTYPE or MBP10_DTYPE
    ext: np.ndarray  # EXT_DTYPE, one row per record

    def __len__(self) -> int:
        return len(self.records)

    def _flag(self, bit: int) -> np.ndarray:
        flagged: np.ndarray = (self.ext["flags"] & bit) != 0
        return flagged

    @property
    def consolidated(self) -> np.ndarray:
        return self._flag(EXT_CONSOLIDATED)

    @property
    def crossed(self) -> np.ndarray:
        return self._flag(EXT_CROSSED)

    @property
    def locked(self) -> np.ndarray:
        return self._flag(EXT_LOCKED)

    @property
    def final(self) -> np.ndarray:
        return self._flag(EXT_FINAL)


def ext_rows(
    *,
    record_index: np.ndarray,
    quality: np.ndarray,
    consolidated: np.ndarray,
    best_bid: np.ndarray,
    best_ask: np.ndarray,
    final: np.ndarray | None = None,
) -> np.ndarray:
    """The EXT_DTYPE rows of n events: crossed and locked from the best prices (UNDEF: none)."""
    n = len(record_index)
    ext = np.zeros(n, dtype=EXT_DTYPE)
    ext["record_index"] = record_index
    ext["quality"] = quality
    both = (best_bid != UNDEF_PRICE) & (best_ask != UNDEF_PRICE)
    flags = np.where(consolidated, EXT_CONSOLIDATED, 0)
    flags |= np.where(both & (best_bid > best_ask), EXT_CROSSED, 0)
    flags |= np.where(both & (best_bid == best_ask), EXT_LOCKED, 0)
    if final is not None:
        flags |= np.where(final, EXT_FINAL, 0)
    ext["flags"] = flags
    return ext


def encode_events(
    schema: str, context: EventContext, depth: int, records: np.ndarray, ext: np.ndarray
) -> Encoded:
    """The message of `records` (a DBN MBP array) and their ext rows."""
    if len(records) != len(ext):
        raise ValueError(f"{len(records)} records but {len(ext)} ext rows")
    headers = [
        (H_SCHEMA, schema.encode()),
        (H_DBN_VERSION, str(DBN_VERSION).encode()),
        (H_EXT_SCHEMA, EXT_SCHEMA.encode()),
        (H_EXT, ext.tobytes()),
        (H_INSTRUMENT_ID, str(context.instrument_id).encode()),
        (H_SYMBOL, (context.symbol or "").encode()),
        (H_SOURCE_PARTITION, str(context.source_partition).encode()),
        (H_SOURCE_OFFSET, str(context.source_offset).encode()),
        (H_SENT_NS, str(context.sent_ns).encode()),
        (H_DEPTH, str(depth).encode()),
    ]
    if context.replay_id:
        headers += [
            (H_REPLAY_ID, context.replay_id.encode()),
            (H_REPLAY_COPY, str(context.replay_copy).encode()),
        ]
    return Encoded(records.tobytes(), headers)


#: Kafka's fixed bytes around one record in a v2 batch of one: the batch header (61) and the
#: record's own varints at their widest (length, timestamp and offset deltas, key and value
#: lengths, header count: 5 each), plus 1 attribute byte. Each header adds two varints (10).
_BATCH_OF_ONE_BYTES = 61 + 6 * 5 + 1
_HEADER_VARINT_BYTES = 10
#: The longest key a message can have: an instrument id (u32) in ASCII.
_KEY_BYTES = 10


def message_bytes(value: bytes, headers: Iterable[tuple[str, bytes]]) -> int:
    """An upper bound of the bytes a keyed message takes in a produce request (a batch of one):
    what the client and the broker hold against their limits (max.request.size,
    max.message.bytes)."""
    header_bytes = sum(_HEADER_VARINT_BYTES + len(k) + len(v) for k, v in headers)
    return _BATCH_OF_ONE_BYTES + _KEY_BYTES + len(value) + header_bytes


def split_events(message: Encoded, max_bytes: int) -> list[Encoded]:
    """The event message as consecutive messages of whole records, each at most `max_bytes`
    (`message_bytes`), as equal in size as possible; the message itself if it fits.

    Every piece keeps the message's headers (its context) with its own slice of `ext`, so its
    rows keep their identity (source position, record_index, publisher): consumers read the
    pieces as they read the whole. How many pieces depends only on the message and the limit.
    """
    if message_bytes(message.value, message.headers) <= max_bytes:
        return [message]
    ext = next((v for k, v in message.headers if k == H_EXT), b"")
    rows = len(ext) // EXT_DTYPE.itemsize
    if not rows:
        raise ValueError(f"an event message without records over {max_bytes} bytes")
    row_bytes = (len(message.value) + len(ext)) // rows
    fixed = message_bytes(b"", [(k, b"" if k == H_EXT else v) for k, v in message.headers])
    fits = (max_bytes - fixed) // row_bytes
    if fits < 1:
        raise ValueError(
            f"one {row_bytes}-byte event and its headers do not fit a {max_bytes}-byte message; "
            "raise MBO_KAFKA__MAX_REQUEST_SIZE"
        )
    pieces = -(-rows // fits)
    per_piece = -(-rows // pieces)
    record_bytes = len(message.value) // rows
    out = []
    for start in range(0, rows, per_piece):
        stop = min(start + per_piece, rows)
        ext_slice = ext[start * EXT_DTYPE.itemsize : stop * EXT_DTYPE.itemsize]
        out.append(
            Encoded(
                message.value[start * record_bytes : stop * record_bytes],
                [(k, ext_slice if k == H_EXT else v) for k, v in message.headers],
            )
        )
    return out


def decode_events(
    schema: str,
    dtype: np.dtype,
    rtype: int,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]] | None,
    key: bytes | None = None,
) -> EventMessage:
    """A message of `schema` (with `key`, one keyed by its instrument); MalformedMessage saying
    what is wrong if it is not one."""
    h = header_map(headers)
    found = h.get(H_SCHEMA)
    if found != schema.encode():
        raise MalformedMessage("schema", f"not a {schema} message: {H_SCHEMA}={found!r}")
    check_dbn_version(h)
    ext_schema = h.get(H_EXT_SCHEMA)
    if ext_schema != EXT_SCHEMA.encode():
        raise MalformedMessage(
            "version", f"unknown {H_EXT_SCHEMA} {ext_schema!r} (this reader knows {EXT_SCHEMA})"
        )
    body = value or b""
    if len(body) % dtype.itemsize:
        raise MalformedMessage(
            "length",
            f"{schema} value of {len(body)} bytes: not whole {dtype.itemsize}-byte records",
        )
    records = np.frombuffer(body, dtype=dtype)
    ext_bytes = h.get(H_EXT, b"")
    if len(ext_bytes) != len(records) * EXT_DTYPE.itemsize:
        raise MalformedMessage(
            "header",
            f"{len(records)} records but {len(ext_bytes)} bytes of {H_EXT} (72 per record)",
        )
    if len(records) and not (records["rtype"] == rtype).all():
        raise MalformedMessage(
            "rtype", f"{schema} value with records of rtype other than {rtype:#04x}"
        )
    # Ranges of the columns these go to (UInt32 instrument, UInt16 partition, UInt64 offset).
    context = EventContext(
        instrument_id=header_int_in(h, H_INSTRUMENT_ID, 0, 1 << 32),
        symbol=h.get(H_SYMBOL, b"").decode(errors="replace") or None,
        source_partition=header_int_in(h, H_SOURCE_PARTITION, 0, 1 << 16),
        source_offset=header_int_in(h, H_SOURCE_OFFSET, 0, 1 << 63),
        sent_ns=header_int_in(h, H_SENT_NS, 0, 1 << 63),
        replay_id=h.get(H_REPLAY_ID, b"").decode(errors="replace"),
        replay_copy=header_int_in(h, H_REPLAY_COPY, 0, 1 << 32) if H_REPLAY_COPY in h else 0,
    )
    keyed = key_instrument(key)
    if keyed is not None and keyed != context.instrument_id:
        raise MalformedMessage("key", f"key {key!r} but {H_INSTRUMENT_ID} {context.instrument_id}")
    if len(records) and not (records["instrument_id"] == context.instrument_id).all():
        raise MalformedMessage(
            "key", f"{schema} records of instruments other than {context.instrument_id}"
        )
    return EventMessage(
        schema=schema,
        context=context,
        depth=header_int_in(h, H_DEPTH, 1, MBP10_DEPTH + 1),
        records=records,
        ext=np.frombuffer(ext_bytes, dtype=EXT_DTYPE),
    )


def mbp_records(
    dtype: np.dtype,
    rtype: int,
    length_words: int,
    *,
    instrument_id: int,
    publisher_id: np.ndarray,
    ts_event: np.ndarray,
    ts_recv: np.ndarray,
    sequence: np.ndarray,
    consolidated: np.ndarray,
) -> np.ndarray:
    """n zeroed MBP records with their DBN header, timestamps and sequence filled in; a
    consolidated book's rows get publisher_id 0 and sequence 0 (the ext flag says which)."""
    out = np.zeros(len(publisher_id), dtype=dtype)
    out["length"] = length_words
    out["rtype"] = rtype
    out["publisher_id"] = np.where(consolidated, 0, publisher_id)
    out["instrument_id"] = instrument_id
    out["ts_event"] = ts_event
    out["ts_recv"] = ts_recv
    out["sequence"] = np.where(consolidated, 0, sequence)
    return out


def fill_levels(levels: np.ndarray, bids: np.ndarray, asks: np.ndarray) -> None:
    """Write (n, depth, 3) price/size/count arrays of each side into an MBP `levels` field of
    shape (n, >= depth); sizes and counts above u32 saturate (DBN's width)."""
    depth = bids.shape[1]
    top = levels[:, :depth]
    top["bid_px"] = bids[:, :, 0]
    top["ask_px"] = asks[:, :, 0]
    top["bid_sz"] = np.minimum(bids[:, :, 1], LEVEL_SIZE_MAX)
    top["ask_sz"] = np.minimum(asks[:, :, 1], LEVEL_SIZE_MAX)
    top["bid_ct"] = np.minimum(bids[:, :, 2], LEVEL_SIZE_MAX)
    top["ask_ct"] = np.minimum(asks[:, :, 2], LEVEL_SIZE_MAX)
    rest = levels[:, depth:]
    rest["bid_px"] = UNDEF_PRICE
    rest["ask_px"] = UNDEF_PRICE
