"""Building MBO records for tests, field by field, in the real DBN layout."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mbo_core.book import F_LAST
from mbo_core.records import MBO_DTYPE, MBO_LENGTH_WORDS, RTYPE_MBO

PX = 1_000_000_000  # one price unit in 1e-9 fixed point


@dataclass(frozen=True)
class Rec:
    action: str
    side: str = "N"
    price: int = 0
    size: int = 0
    order_id: int = 0
    flags: int = F_LAST
    instrument_id: int = 1
    publisher_id: int = 1
    ts_event: int = 0
    sequence: int = 0


def add(side: str, price: int, size: int, order_id: int, **kw: int) -> Rec:
    return Rec("A", side, price, size, order_id, **kw)


def cancel(side: str, price: int, size: int, order_id: int, **kw: int) -> Rec:
    return Rec("C", side, price, size, order_id, **kw)


def modify(side: str, price: int, size: int, order_id: int, **kw: int) -> Rec:
    return Rec("M", side, price, size, order_id, **kw)


def clear(**kw: int) -> Rec:
    return Rec("R", "N", **kw)


def to_array(recs: Sequence[Rec]) -> np.ndarray:
    """Records as a DBN MBO array; ts_event/sequence default to the record's position."""
    out = np.zeros(len(recs), dtype=MBO_DTYPE)
    out["length"] = MBO_LENGTH_WORDS
    out["rtype"] = RTYPE_MBO
    for i, r in enumerate(recs):
        row = out[i]
        row["publisher_id"] = r.publisher_id
        row["instrument_id"] = r.instrument_id
        row["ts_event"] = r.ts_event or 1_700_000_000_000_000_000 + i
        row["ts_recv"] = row["ts_event"] + 1000
        row["order_id"] = r.order_id
        row["price"] = r.price
        row["size"] = r.size
        row["flags"] = r.flags
        row["action"] = ord(r.action)
        row["side"] = ord(r.side)
        row["sequence"] = r.sequence or i + 1
    return out
