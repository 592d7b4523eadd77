"""The compiled JSON writers produce exactly the bytes orjson writes for the Python values."""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st

from mbo_core.json_columns import levels_json, prices_json
from mbo_core.prices import PRICE_SCALE, UNDEF_PRICE, format_price
from mbo_core.schemas import levels_json as python_levels_json

INT64 = st.integers(-(2**63), 2**63 - 1)
# Real prices are small multiples of a tick; the extremes check the digit and sign handling.
PRICES = st.one_of(
    INT64.filter(lambda p: p != UNDEF_PRICE),
    st.integers(-(10**6), 10**6).map(lambda ticks: ticks * 10_000_000),
    st.sampled_from([0, 1, -1, PRICE_SCALE, -PRICE_SCALE // 2, -(2**63), 2**63 - 2]),
)
# Load the compiled writers before hypothesis times the first example.
prices_json(np.zeros(1, dtype=np.int64))
levels_json(np.zeros((1, 3), dtype=np.int64))


@given(st.lists(st.one_of(PRICES, st.just(UNDEF_PRICE)), max_size=40))
def test_price_column_matches_format_price(prices: list[int]) -> None:
    expected = [None if p == UNDEF_PRICE else format_price(p) for p in prices]
    assert orjson.dumps(prices_json(np.array(prices, dtype=np.int64))) == orjson.dumps(expected)


@given(st.lists(st.tuples(PRICES, INT64, INT64), max_size=40))
def test_levels_match_the_python_encoding(rows: list[tuple[int, int, int]]) -> None:
    levels = np.array(rows, dtype=np.int64).reshape(-1, 3)
    assert orjson.dumps(levels_json(levels)) == orjson.dumps(python_levels_json(levels))


def test_fragments_embed_in_messages() -> None:
    levels = np.array([[64_810_000_000, 3, 1], [64_800_000_000, 12, 4]], dtype=np.int64)
    message = {"bids": levels_json(levels), "price": prices_json(levels[:, 0])}
    assert orjson.loads(orjson.dumps(message)) == {
        "bids": [
            {"price": "64.81", "size": 3, "count": 1},
            {"price": "64.8", "size": 12, "count": 4},
        ],
        "price": ["64.81", "64.8"],
    }
