"""The snapshots topic's wire: encode -> decode round trip, and DBN readers of the value."""

from __future__ import annotations

import databento_dbn
import numpy as np
import pytest

from mbo_core.prices import UNDEF_PRICE
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.wire import EventContext, book_json, decode_snapshots, encode_snapshots

CONTEXT = EventContext(instrument_id=7, symbol=None, source_partition=0, source_offset=3, sent_ns=9)
PX = 1_000_000_000
NONE = [UNDEF_PRICE, 0, 0]


def _encoded(depth: int = 3) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A publisher's book (two bids, one ask; crossed) and a final consolidated one (empty)."""
    bids = np.array([[[101 * PX, 5, 2], [100 * PX, 1, 1], NONE], [NONE, NONE, NONE]])
    asks = np.array([[[100_500_000_000, 4, 1], NONE, NONE], [NONE, NONE, NONE]])
    encoded = encode_snapshots(
        CONTEXT,
        depth=depth,
        publisher_id=np.array([2, 0]),
        record_index=np.array([4, 0]),
        ts_event=np.array([50, 60]),
        ts_recv=np.array([51, 61]),
        sequence=np.array([8, 0]),
        bids=bids[:, :depth],
        asks=asks[:, :depth],
        quality=np.array([[0, 1, 0, 0, 0, 0, 0, 0], [0] * 8]),
        consolidated=np.array([False, True]),
        final=np.array([False, True]),
    )
    return encoded.value, encoded.headers


def test_round_trip_to_book_json() -> None:
    value, headers = _encoded()
    message = decode_snapshots(value, headers)
    assert message.depth == 3 and len(value) == 2 * 368
    assert message.final.tolist() == [False, True]
    assert book_json(message, 0) == {
        "instrument_id": 7, "publisher_id": 2, "symbol": None, "ts_event": 50, "ts_recv": 51,
        "sequence": 8,
        "bids": [{"price": "101", "size": 5, "count": 2}, {"price": "100", "size": 1, "count": 1}],
        "asks": [{"price": "100.5", "size": 4, "count": 1}],
        "crossed": True, "locked": False,
        "quality": {name: int(name == "modify_unknown_order") for name in QUALITY_FIELDS},
    }  # fmt: skip
    consolidated = book_json(message, 1)
    assert (consolidated["publisher_id"], consolidated["sequence"]) == (None, None)
    assert consolidated["bids"] == consolidated["asks"] == []


def test_databento_dbn_reads_the_value_as_mbp10_records() -> None:
    value, _ = _encoded()
    decoder = databento_dbn.DBNDecoder(has_metadata=False)
    decoder.write(value)
    book, _ = decoder.decode()
    assert isinstance(book, databento_dbn.MBP10Msg)
    assert (book.instrument_id, book.publisher_id, book.ts_event, book.sequence) == (7, 2, 50, 8)
    assert (book.action, book.side, book.price, book.flags) == ("N", "N", UNDEF_PRICE, 128)
    levels = book.levels
    assert len(levels) == 10
    assert [(lv.bid_px, lv.bid_sz, lv.bid_ct) for lv in levels[:3]] == [
        (101 * PX, 5, 2), (100 * PX, 1, 1), (UNDEF_PRICE, 0, 0)
    ]  # fmt: skip
    assert all(lv.bid_px == lv.ask_px == UNDEF_PRICE for lv in levels[3:])  # beyond depth
    flat = np.frombuffer(value, dtype=np.dtype(databento_dbn.MBP10Msg._dtypes))
    assert flat["ask_px_00"].tolist() == [100_500_000_000, UNDEF_PRICE]


def test_depth_is_at_most_ten() -> None:
    with pytest.raises(ValueError, match="depth must be 1-10"):
        encode_snapshots(
            CONTEXT, depth=11, publisher_id=np.zeros(1), record_index=np.zeros(1),
            ts_event=np.zeros(1), ts_recv=np.zeros(1), sequence=np.zeros(1),
            bids=np.zeros((1, 11, 3)), asks=np.zeros((1, 11, 3)), quality=np.zeros((1, 8)),
            consolidated=np.zeros(1, bool), final=np.zeros(1, bool),
        )  # fmt: skip


def test_a_bbo_message_is_not_a_snapshots_message() -> None:
    value, headers = _encoded()
    with pytest.raises(ValueError, match=r"not a dbn\.mbp-10 message"):
        decode_snapshots(value[:80], [(k, b"dbn.mbp-1" if k == "mbo-schema" else v)
                                      for k, v in headers])  # fmt: skip
