"""The bbo topic's wire: encode -> decode round trip, and DBN readers of the value."""

from __future__ import annotations

import databento_dbn
import numpy as np
import pytest

from mbo_core.prices import UNDEF_PRICE
from mbo_core.records import MBO_DTYPE
from mbo_core.wire import EventContext, bbo_json, decode_bbo, encode_bbo
from mbo_core.wire.layouts import EXT_DTYPE, LEVEL_SIZE_MAX

CONTEXT = EventContext(
    instrument_id=432669, symbol="CLX5", source_partition=2, source_offset=77, sent_ns=123
)
PX = 1_000_000_000


def _closing(n: int) -> np.ndarray:
    records = np.zeros(n, dtype=MBO_DTYPE)
    records["action"] = [ord("A"), ord("C")][:n]
    records["side"] = [ord("B"), ord("A")][:n]
    records["price"] = [64 * PX, 65 * PX][:n]
    records["size"] = [3, 4][:n]
    records["flags"] = 128
    records["ts_in_delta"] = [17, 18][:n]
    return records


def _encoded() -> tuple[bytes, list[tuple[str, bytes]]]:
    """Two changes: publisher 1's (bid 64.5 x 10 / 2 orders, no ask) and the consolidated one."""
    encoded = encode_bbo(
        CONTEXT,
        publisher_id=np.array([1, 0]),
        record_index=np.array([5, 5]),
        ts_event=np.array([1_000, 1_000]),
        ts_recv=np.array([1_010, 1_010]),
        sequence=np.array([42, 0]),
        bbo=np.array(
            [
                [64_500_000_000, 10, 2, UNDEF_PRICE, 0, 0],
                [65 * PX, LEVEL_SIZE_MAX + 5, 3, 65 * PX, 1, 1],  # locked, size saturates
            ]
        ),
        quality=np.array([[1, 2, 0, 0, 0, 0, 0, 0], [3, 4, 0, 0, 0, 0, 0, 9]]),
        consolidated=np.array([False, True]),
        closing=_closing(2),
    )
    return encoded.value, encoded.headers


def test_round_trip() -> None:
    value, headers = _encoded()
    message = decode_bbo(value, headers)
    assert message.context == CONTEXT and message.depth == 1
    assert len(message) == 2 and len(value) == 2 * 80
    levels = message.records["levels"][:, 0]
    assert levels["bid_px"].tolist() == [64_500_000_000, 65 * PX]
    assert levels["ask_px"].tolist() == [UNDEF_PRICE, 65 * PX]
    assert levels["bid_sz"].tolist() == [10, LEVEL_SIZE_MAX]
    assert message.records["publisher_id"].tolist() == [1, 0]
    assert message.consolidated.tolist() == [False, True]
    assert message.locked.tolist() == [False, True]
    assert message.crossed.tolist() == [False, False]
    assert message.ext["record_index"].tolist() == [5, 5]
    assert message.ext["quality"][1].tolist() == [3, 4, 0, 0, 0, 0, 0, 9]
    # The closing record's update, as Databento's MBP-1 has it.
    assert message.records["action"].tolist() == [ord("A"), ord("C")]
    assert message.records["price"].tolist() == [64 * PX, 65 * PX]
    assert bbo_json(message, 0) == {
        "instrument_id": 432669, "publisher_id": 1, "symbol": "CLX5", "ts_event": 1_000,
        "ts_recv": 1_010, "bid": {"price": "64.5", "size": 10, "count": 2}, "ask": None,
        "crossed": False, "locked": False,
    }  # fmt: skip
    assert bbo_json(message, 1)["publisher_id"] is None


def test_databento_dbn_reads_the_value_as_mbp1_records() -> None:
    value, _ = _encoded()
    decoder = databento_dbn.DBNDecoder(has_metadata=False)
    decoder.write(value)
    first, second = decoder.decode()
    assert isinstance(first, databento_dbn.MBP1Msg)
    assert (first.instrument_id, first.publisher_id, first.ts_event, first.ts_recv) == (
        432669, 1, 1_000, 1_010
    )  # fmt: skip
    assert (first.sequence, first.action, first.side, first.price, first.size) == (
        42, "A", "B", 64 * PX, 3
    )  # fmt: skip
    level = first.levels[0]
    assert (level.bid_px, level.bid_sz, level.bid_ct, level.ask_px) == (
        64_500_000_000, 10, 2, UNDEF_PRICE
    )  # fmt: skip
    assert isinstance(second, databento_dbn.MBP1Msg) and second.levels[0].ask_px == 65 * PX
    # numpy with databento_dbn's own (flat) field names reads the same bytes.
    flat = np.frombuffer(value, dtype=np.dtype(databento_dbn.MBP1Msg._dtypes))
    assert flat["bid_px_00"].tolist() == [64_500_000_000, 65 * PX]


def test_ext_rows_travel_in_a_header() -> None:
    _, headers = _encoded()
    ext = dict(headers)["ext"]
    assert len(ext) == 2 * EXT_DTYPE.itemsize == 144


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda v, h: (v, {**h, "mbo-schema": b"dbn.mbp-10"}), "not a dbn.mbp-1 message"),
        (lambda v, h: (v[:-1], h), "not whole 80-byte records"),
        (lambda v, h: (v, {**h, "ext": h["ext"][:-1]}), "72 per record"),
        (lambda v, h: (v, {**h, "ext-schema": b"mbo.ext/9"}), "unknown ext-schema"),
        (lambda v, h: (v, {k: x for k, x in h.items() if k != "source-offset"}), "source-offset"),
        (lambda v, h: (b"\x14\x0a" + v[2:], h), "rtype"),
        (lambda v, h: (v, {**h, "instrument-id": b"7"}), "instruments other than 7"),
        (lambda v, h: (v, {**h, "source-partition": b"70000"}), r"outside \[0, 65536\)"),
        (lambda v, h: (v, {**h, "source-offset": b"-3"}), "source-offset=-3 outside"),
        (lambda v, h: (v, {**h, "dbn-version": b"99"}), "knows DBN versions 1-3"),
    ],
)
def test_malformed_messages_are_refused(change: object, error: str) -> None:
    value, headers = _encoded()
    bad_value, bad_headers = change(value, dict(headers))  # type: ignore[operator]
    with pytest.raises(ValueError, match=error):
        decode_bbo(bad_value, list(bad_headers.items()))
