"""The API's one convention for units, without a pipeline: times as ns with an exact ISO-8601
sibling, prices as exact decimal strings (the bars' too)."""

from __future__ import annotations

from decimal import Decimal

import hypothesis
import hypothesis.strategies as st
import numpy as np

from api.params import MAX_NS, parse_ts
from api.store import bar_from_row, format_decimal
from mbo_core.prices import format_price
from mbo_core.timestamps import iso_name, iso_ns, with_iso


def test_iso_ns_is_exact_utc_with_nine_digits() -> None:
    assert iso_ns(1_758_742_200_000_860_311) == "2025-09-24T19:30:00.000860311Z"
    assert iso_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert iso_ns(MAX_NS) == "2262-04-11T23:47:16.854775807Z"


@hypothesis.given(st.integers(min_value=0, max_value=MAX_NS))
def test_iso_ns_round_trips_through_the_api_parser_and_numpy(ns: int) -> None:
    text = iso_ns(ns)
    assert parse_ts(text, "ts") == ns
    assert int(np.datetime64(text.removesuffix("Z"), "ns").astype(np.int64)) == ns


def test_with_iso_puts_each_sibling_after_its_field() -> None:
    status = {"state": "idle", "started_ns": None, "t": 5, "ts_event": 10**18}
    assert list(with_iso(status, "started_ns", "t", "ts_event").items()) == [
        ("state", "idle"),
        ("started_ns", None),
        ("started_iso", None),
        ("t", 5),
        ("t_iso", "1970-01-01T00:00:00.000000005Z"),
        ("ts_event", 10**18),
        ("ts_event_iso", "2001-09-09T01:46:40.000000000Z"),
    ]
    assert "started_iso" not in status  # a new dict
    assert iso_name("ts_recv") == "ts_recv_iso"
    assert iso_name("last_update_ns") == "last_update_iso"


def test_decimals_are_exact_text_without_exponent_or_trailing_zeros() -> None:
    cases = {
        "64.8150000000": "64.815",  # ClickHouse's Decimal(38, 10) of a mid
        "64.8150000005": "64.8150000005",  # half a 1e-9 tick
        "8.06E-7": "0.000000806",
        "0E-9": "0",
        "-0.010000000": "-0.01",  # a crossed spread
        "100.0000000000": "100",
        "9223372036.8547758075": "9223372036.8547758075",  # beyond float precision
    }
    for given, shown in cases.items():
        assert format_decimal(Decimal(given)) == shown
        assert Decimal(shown) == Decimal(given)


@hypothesis.given(st.integers(min_value=-(2**62), max_value=2**62))
def test_decimal_text_is_that_of_format_price(units: int) -> None:
    assert format_decimal(Decimal(units).scaleb(-9)) == format_price(units)


def test_a_bar_has_decimal_prices_and_an_iso_start() -> None:
    row = {
        "bar_ns": 1_758_742_200_000_000_000,
        "open": Decimal("64.8150000000"),
        "high": Decimal("64.8200000005"),
        "low": Decimal("64.8000000000"),
        "close": Decimal("64.8100000000"),
        "last_spread": Decimal("0.020000000"),
        "changes": 3,
    }
    assert bar_from_row(row) == {
        "t": 1_758_742_200_000_000_000,
        "t_iso": "2025-09-24T19:30:00.000000000Z",
        "open": "64.815",
        "high": "64.8200000005",
        "low": "64.8",
        "close": "64.81",
        "spread": "0.02",
        "changes": 3,
    }
