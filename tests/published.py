"""The processor's output messages as plain rows, read with mbo_core.wire's decoders (tests
compare these with offline results; they never decode the wire themselves)."""

from __future__ import annotations

from typing import Any

from mbo_core.prices import UNDEF_PRICE, format_price
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.wire import Encoded, book_json, decode_bbo, decode_snapshots


def _price(value: int) -> str | None:
    return None if value == UNDEF_PRICE else format_price(value)


def bbo_rows(encoded: Encoded) -> list[dict[str, Any]]:
    """One dict per BBO change: publisher_id (None: consolidated), record_index, ts_event,
    ts_recv, sequence (None: consolidated), bid/ask price (decimal str or None), size, count,
    crossed, locked, quality {counter: int}."""
    message = decode_bbo(encoded.value, encoded.headers)
    rows = []
    # Each flag array once (the properties compute the whole array at every access).
    consolidated_flags = message.consolidated.tolist()
    crossed, locked = message.crossed.tolist(), message.locked.tolist()
    record_index = message.ext["record_index"].tolist()
    quality = message.ext["quality"].tolist()
    for i, record in enumerate(message.records.tolist()):
        consolidated = bool(consolidated_flags[i])
        fields = dict(zip(message.records.dtype.names or (), record, strict=True))
        ((bid_px, ask_px, bid_sz, ask_sz, bid_ct, ask_ct),) = fields["levels"]
        rows.append(
            {
                "publisher_id": None if consolidated else fields["publisher_id"],
                "record_index": int(record_index[i]),
                "ts_event": fields["ts_event"],
                "ts_recv": fields["ts_recv"],
                "sequence": None if consolidated else fields["sequence"],
                "bid_price": _price(bid_px),
                "bid_size": bid_sz,
                "bid_count": bid_ct,
                "ask_price": _price(ask_px),
                "ask_size": ask_sz,
                "ask_count": ask_ct,
                "crossed": bool(crossed[i]),
                "locked": bool(locked[i]),
                "quality": dict(zip(QUALITY_FIELDS, quality[i], strict=True)),
            }
        )
    return rows


def snapshot_rows(encoded: Encoded) -> list[dict[str, Any]]:
    """One book JSON per snapshot, with its record_index, final mark, depth and source."""
    message = decode_snapshots(encoded.value, encoded.headers)
    context = message.context
    return [
        {
            **book_json(message, i),
            "record_index": int(message.ext["record_index"][i]),
            "final": bool(message.final[i]),
            "depth": message.depth,
            "source": {"partition": context.source_partition, "offset": context.source_offset},
            "replay_id": context.replay_id,
            "replay_copy": context.replay_copy,
        }
        for i in range(len(message))
    ]
