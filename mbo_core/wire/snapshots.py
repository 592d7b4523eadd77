"""The snapshots topic (`mbo.snapshots`): depth snapshots of books, as DBN MBP-10 records.

One message per records message whose events produced snapshots (and one per instrument at its
end-of-stream marker with every book's last state, ext flag EXT_FINAL; several consecutive ones
when that exceeds a produce request: `split_events`): one MBP-10 record (368 bytes,
`MBP10_DTYPE`) per snapshot, in event order, context and ext rows in headers
(mbo_core/wire/envelope.py). Fields of a record:

* header: length 92, rtype 0x0A, publisher_id (0 for the consolidated book: ext flag
  EXT_CONSOLIDATED), instrument_id, ts_event of the book's last event;
* price UNDEF_PRICE, size 0, action 'N', side 'N', flags F_LAST (the book is observable here),
  depth 0, ts_in_delta 0: a snapshot is a state, not an update;
* ts_recv, sequence of the book's last event (sequence 0 for the consolidated book);
* levels[0..9]: the best `depth` levels per side (the `depth` header, at most 10), best first;
  a side with fewer levels, and levels beyond `depth`, have price UNDEF_PRICE, size and count 0.
  Sizes and counts are u32 (a total above 2^32-1 saturates).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from mbo_core.prices import UNDEF_PRICE
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.schemas import BookJson, levels_json
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
from mbo_core.wire.layouts import MBP10_DEPTH, MBP10_DTYPE, MBP10_LENGTH_WORDS, RTYPE_MBP_10

SNAPSHOTS_SCHEMA = "dbn.mbp-10"
F_LAST = 128


def encode_snapshots(
    context: EventContext,
    *,
    depth: int,
    publisher_id: np.ndarray,
    record_index: np.ndarray,
    ts_event: np.ndarray,
    ts_recv: np.ndarray,
    sequence: np.ndarray,
    bids: np.ndarray,
    asks: np.ndarray,
    quality: np.ndarray,
    consolidated: np.ndarray,
    final: np.ndarray,
) -> Encoded:
    """The message of n snapshots. bids, asks: (n, depth, 3) price, size, count, best first,
    price UNDEF_PRICE past a side's last level; quality: (n, counters)."""
    if not 1 <= depth <= MBP10_DEPTH or bids.shape[1:] != (depth, 3) or asks.shape != bids.shape:
        raise ValueError(f"snapshot levels of shape {bids.shape}: depth must be 1-{MBP10_DEPTH}")
    out = mbp_records(
        MBP10_DTYPE,
        RTYPE_MBP_10,
        MBP10_LENGTH_WORDS,
        instrument_id=context.instrument_id,
        publisher_id=publisher_id,
        ts_event=ts_event,
        ts_recv=ts_recv,
        sequence=sequence,
        consolidated=consolidated,
    )
    out["price"] = UNDEF_PRICE
    out["action"] = ord("N")
    out["side"] = ord("N")
    out["flags"] = F_LAST
    fill_levels(out["levels"], bids, asks)
    ext = ext_rows(
        record_index=record_index,
        quality=quality,
        consolidated=consolidated,
        best_bid=bids[:, 0, 0],
        best_ask=asks[:, 0, 0],
        final=final,
    )
    return encode_events(SNAPSHOTS_SCHEMA, context, depth, out, ext)


def decode_snapshots(
    value: bytes | None, headers: Iterable[tuple[str, bytes]] | None, key: bytes | None = None
) -> EventMessage:
    """A snapshots message (with `key`, keyed by its instrument); MalformedMessage if not one."""
    return decode_events(SNAPSHOTS_SCHEMA, MBP10_DTYPE, RTYPE_MBP_10, value, headers, key)


def _side(levels: np.ndarray, prefix: str) -> list[dict[str, Any]]:
    """One side's defined levels (price not UNDEF_PRICE) as book JSON, best first."""
    prices = levels[f"{prefix}_px"]
    defined = prices != UNDEF_PRICE
    rows = np.stack(
        [prices[defined], levels[f"{prefix}_sz"][defined], levels[f"{prefix}_ct"][defined]],
        axis=1,
    )
    return levels_json(rows)


def book_json(message: EventMessage, i: int) -> BookJson:
    """Snapshot i as book JSON (mbo_core/schemas.py), prices as exact decimal strings."""
    record = message.records[i]
    levels = record["levels"]
    consolidated = bool(message.consolidated[i])
    return {
        "instrument_id": message.context.instrument_id,
        "publisher_id": None if consolidated else int(record["publisher_id"]),
        "symbol": message.context.symbol,
        "ts_event": int(record["ts_event"]),
        "ts_recv": int(record["ts_recv"]),
        "sequence": None if consolidated else int(record["sequence"]),
        "bids": _side(levels, "bid"),
        "asks": _side(levels, "ask"),
        "crossed": bool(message.crossed[i]),
        "locked": bool(message.locked[i]),
        "quality": dict(zip(QUALITY_FIELDS, message.ext["quality"][i].tolist(), strict=True)),
    }
