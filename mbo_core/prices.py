"""Prices are int64 in 1e-9 units everywhere inside; these convert at the edge (JSON, UI)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

PRICE_SCALE = 1_000_000_000
UNDEF_PRICE = (1 << 63) - 1


@lru_cache(maxsize=1 << 16)  # books quote few distinct prices; this runs for every level shown
def format_price(price: int) -> str:
    """The exact decimal string of a fixed-point price: 64810000000 -> "64.81", -5e8 -> "-0.5"."""
    if price == UNDEF_PRICE:
        raise ValueError("UNDEF_PRICE has no decimal value")
    sign = "-" if price < 0 else ""
    whole, frac = divmod(abs(price), PRICE_SCALE)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:09d}".rstrip("0")


def parse_price(text: str) -> int:
    """The fixed-point value of a decimal string; ValueError if it is not a multiple of 1e-9."""
    scaled = Decimal(text) * PRICE_SCALE
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{text!r} has more than 9 decimal places")
    return int(scaled)
