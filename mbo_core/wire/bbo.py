"""The bbo topic (`mbo.bbo`): every best-level change, as DBN MBP-1 records.

One message per records message whose events changed a best level (several consecutive ones
when that exceeds a produce request: `split_events`): one MBP-1 record (80 bytes, `MBP1_DTYPE`)
per change, in event order, with the message context and the ext rows in headers
(mbo_core/wire/envelope.py). Fields of a record:

* header: length 20, rtype 0x01, publisher_id (0 for the consolidated book: ext flag
  EXT_CONSOLIDATED), instrument_id, ts_event of the event;
* price, size, action, side, flags, ts_in_delta: those of the F_LAST record that closed the event
  (the update that produced this top of book, as in Databento's MBP-1); depth 0;
* ts_recv, sequence of the event (sequence 0 for the consolidated book, NULL in ClickHouse);
* levels[0]: best bid and ask price (1e-9 units, UNDEF_PRICE = no level), total size and order
  count (u32; a total above 2^32-1 saturates).

The ext row adds the F_LAST record's index in the source message, crossed/locked and the book's
data-quality counters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from mbo_core.prices import UNDEF_PRICE, format_price
from mbo_core.wire.envelope import (
    Encoded,
    EventContext,
    EventMessage,
    decode_events,
    encode_events,
    ext_rows,
    fill_levels,
    mbp_records,
)
from mbo_core.wire.layouts import MBP1_DTYPE, MBP1_LENGTH_WORDS, RTYPE_MBP_1

BBO_SCHEMA = "dbn.mbp-1"


def encode_bbo(
    context: EventContext,
    *,
    publisher_id: np.ndarray,
    record_index: np.ndarray,
    ts_event: np.ndarray,
    ts_recv: np.ndarray,
    sequence: np.ndarray,
    bbo: np.ndarray,
    quality: np.ndarray,
    consolidated: np.ndarray,
    closing: np.ndarray,
) -> Encoded:
    """The message of n changes. bbo: (n, 6) bid price, size, count, ask price, size, count;
    quality: (n, counters); closing: the n F_LAST MBO records that closed the events."""
    out = mbp_records(
        MBP1_DTYPE,
        RTYPE_MBP_1,
        MBP1_LENGTH_WORDS,
        instrument_id=context.instrument_id,
        publisher_id=publisher_id,
        ts_event=ts_event,
        ts_recv=ts_recv,
        sequence=sequence,
        consolidated=consolidated,
    )
    for field in ("price", "size", "action", "side", "flags", "ts_in_delta"):
        out[field] = closing[field]
    bbo = np.asarray(bbo, dtype=np.int64)
    fill_levels(out["levels"], bbo[:, None, 0:3], bbo[:, None, 3:6])
    ext = ext_rows(
        record_index=record_index,
        quality=quality,
        consolidated=consolidated,
        best_bid=bbo[:, 0],
        best_ask=bbo[:, 3],
    )
    return encode_events(BBO_SCHEMA, context, 1, out, ext)


def decode_bbo(
    value: bytes | None, headers: Iterable[tuple[str, bytes]] | None, key: bytes | None = None
) -> EventMessage:
    """A bbo message (with `key`, keyed by its instrument); MalformedMessage if not one."""
    return decode_events(BBO_SCHEMA, MBP1_DTYPE, RTYPE_MBP_1, value, headers, key)


def _side(price: int, size: int, count: int) -> dict[str, Any] | None:
    if price == UNDEF_PRICE:
        return None
    return {"price": format_price(price), "size": size, "count": count}


def bbo_json(message: EventMessage, i: int) -> dict[str, Any]:
    """Row i as the API's BBO object (prices as exact decimal strings)."""
    record = message.records[i]
    level = record["levels"][0]
    consolidated = bool(message.consolidated[i])
    return {
        "instrument_id": message.context.instrument_id,
        "publisher_id": None if consolidated else int(record["publisher_id"]),
        "symbol": message.context.symbol,
        "ts_event": int(record["ts_event"]),
        "ts_recv": int(record["ts_recv"]),
        "bid": _side(int(level["bid_px"]), int(level["bid_sz"]), int(level["bid_ct"])),
        "ask": _side(int(level["ask_px"]), int(level["ask_sz"]), int(level["ask_ct"])),
        "crossed": bool(message.crossed[i]),
        "locked": bool(message.locked[i]),
    }
