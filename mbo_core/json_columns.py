# numba compiles the writers with its own type inference (see mbo_core/book/kernel.py).
# mypy: disable-error-code="no-any-return"
"""Compiled JSON text for the two hot parts of the wire messages: price columns and levels.

The processor writes a price string per BBO row and per snapshot level; in Python that is a
format call and a dict per value (~1 us each, tens of thousands per second). These writers
produce the very same bytes orjson writes for `format_price` strings and level dicts, and the
messages embed them with `orjson.Fragment`, so the wire format is unchanged (a test holds the
two encodings equal).
"""

from __future__ import annotations

import numpy as np
import orjson
from numba import njit

from mbo_core.prices import PRICE_SCALE, UNDEF_PRICE

_QUOTE, _MINUS, _DOT, _ZERO = ord('"'), ord("-"), ord("."), ord("0")
# Module constants: numba freezes global arrays into the compiled code.
_NULL = np.frombuffer(b"null", dtype=np.uint8)
_PRICE_KEY = np.frombuffer(b'{"price":', dtype=np.uint8)
_SIZE_KEY = np.frombuffer(b',"size":', dtype=np.uint8)
_COUNT_KEY = np.frombuffer(b',"count":', dtype=np.uint8)
#: Longest text of one price ("-" + 20 digits + "." + 9 digits + quotes) and of one level.
_PRICE_BYTES = 33
_LEVEL_BYTES = _PRICE_BYTES + 2 * 21 + 30


@njit(cache=True, inline="always")
def _put(buf: np.ndarray, pos: int, text: np.ndarray) -> int:
    for i in range(text.size):
        buf[pos + i] = text[i]
    return pos + text.size


@njit(cache=True)
def _put_digits(buf: np.ndarray, pos: int, value: np.uint64, width: int) -> int:
    """`value` in decimal, left-padded with zeros to at least `width` digits."""
    n = 1
    v = value // np.uint64(10)
    while v > np.uint64(0):
        n += 1
        v //= np.uint64(10)
    n = max(n, width)
    v = value
    for i in range(pos + n - 1, pos - 1, -1):
        buf[i] = _ZERO + np.uint8(v % np.uint64(10))
        v //= np.uint64(10)
    return pos + n


@njit(cache=True)
def _put_int(buf: np.ndarray, pos: int, value: int) -> int:
    if value < 0:
        buf[pos] = _MINUS
        # Negate in uint64 so that the most negative int64 has a magnitude too.
        return _put_digits(buf, pos + 1, np.uint64(0) - np.uint64(value), 1)
    return _put_digits(buf, pos, np.uint64(value), 1)


@njit(cache=True)
def _put_price(buf: np.ndarray, pos: int, price: int) -> int:
    """`format_price(price)` as a JSON string: the exact decimal, no trailing zeros."""
    buf[pos] = _QUOTE
    pos += 1
    magnitude = np.uint64(price)
    if price < 0:
        buf[pos] = _MINUS
        pos += 1
        magnitude = np.uint64(0) - np.uint64(price)
    scale = np.uint64(PRICE_SCALE)
    pos = _put_digits(buf, pos, magnitude // scale, 1)
    frac = magnitude % scale
    if frac != np.uint64(0):
        buf[pos] = _DOT
        pos += 1
        width = 9
        while frac % np.uint64(10) == np.uint64(0):
            frac //= np.uint64(10)
            width -= 1
        pos = _put_digits(buf, pos, frac, width)
    buf[pos] = _QUOTE
    return pos + 1


@njit(cache=True)
def _write_prices(prices: np.ndarray, buf: np.ndarray) -> int:
    pos = 0
    buf[pos] = ord("[")
    pos += 1
    for i in range(prices.size):
        if i:
            buf[pos] = ord(",")
            pos += 1
        price = prices[i]
        pos = _put(buf, pos, _NULL) if price == UNDEF_PRICE else _put_price(buf, pos, price)
    buf[pos] = ord("]")
    return pos + 1


@njit(cache=True)
def _write_levels(levels: np.ndarray, buf: np.ndarray) -> int:
    pos = 0
    buf[pos] = ord("[")
    pos += 1
    for i in range(levels.shape[0]):
        if i:
            buf[pos] = ord(",")
            pos += 1
        pos = _put(buf, pos, _PRICE_KEY)
        pos = _put_price(buf, pos, levels[i, 0])
        pos = _put(buf, pos, _SIZE_KEY)
        pos = _put_int(buf, pos, levels[i, 1])
        pos = _put(buf, pos, _COUNT_KEY)
        pos = _put_int(buf, pos, levels[i, 2])
        buf[pos] = ord("}")
        pos += 1
    buf[pos] = ord("]")
    return pos + 1


def prices_json(prices: np.ndarray) -> orjson.Fragment:
    """A price column (int64, 1e-9 units) as a JSON array of decimal strings, null for none."""
    column = np.ascontiguousarray(prices, dtype=np.int64)
    buf = np.empty(column.size * _PRICE_BYTES + 2, dtype=np.uint8)
    return orjson.Fragment(buf[: _write_prices(column, buf)].tobytes())


def levels_json(levels: np.ndarray) -> orjson.Fragment:
    """Levels (rows of price, size, count) as the JSON array of {"price", "size", "count"}."""
    rows = np.ascontiguousarray(levels, dtype=np.int64)
    buf = np.empty(rows.shape[0] * _LEVEL_BYTES + 2, dtype=np.uint8)
    return orjson.Fragment(buf[: _write_levels(rows, buf)].tobytes())
