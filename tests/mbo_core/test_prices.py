"""Fixed-point prices <-> exact decimal strings."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mbo_core.prices import UNDEF_PRICE, format_price, parse_price


@pytest.mark.parametrize(
    ("fixed", "text"),
    [
        (64_810_000_000, "64.81"),
        (65_000_000_000, "65"),
        (1, "0.000000001"),
        (-500_000_000, "-0.5"),
        (0, "0"),
        (-(2**63), "-9223372036.854775808"),
    ],
)
def test_format_price(fixed: int, text: str) -> None:
    assert format_price(fixed) == text
    assert parse_price(text) == fixed


@given(st.integers(min_value=-(2**63), max_value=2**63 - 2))
def test_round_trip_is_exact(fixed: int) -> None:
    text = format_price(fixed)
    assert parse_price(text) == fixed
    assert Decimal(text) == Decimal(fixed) / 10**9


def test_undef_price_has_no_decimal() -> None:
    with pytest.raises(ValueError, match="UNDEF_PRICE"):
        format_price(UNDEF_PRICE)


def test_parse_refuses_sub_nano_precision() -> None:
    with pytest.raises(ValueError, match="9 decimal places"):
        parse_price("1.0000000001")
