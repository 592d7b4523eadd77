"""Golden test: the real CLX5 capture (GLBX.MDP3, 2025-09-24 19:30-22:00 UTC, 38,212 records).

Where the expected values come from, so that none is just "what the engine printed":

* records (38,212): the task statement and databento's decoder agree on it.
* events (32,053): records carrying F_LAST, counted from databento's own decoded records
  (`int(rec.flags) & 128`), not from our numpy view.
* data quality: the file starts mid-session with no snapshot, so orders placed before 19:30
  are unknown to us. 1,224 Cancels and 216 Modifies refer to such orders. These counts, and the
  whole final book, were first derived with tests/reference_book.py (a dict-and-list book written
  straight from book-rules.md) fed by databento's record iterator; the test recomputes them that
  way too. No record has a bad side, F_MAYBE_BAD_BOOK, F_TOB, or an over-sized cancel, so the
  other counters are 0.
* the final book is CROSSED (best bid 65.40 > best ask 64.78). That is the data, not a bug: the
  65.40 bid is a plain Add (order 8058566670885) at 21:59:00 UTC, during CME's pre-open after the
  daily 17:00 ET halt, when orders rest without matching. The engine reports it and leaves it.
"""

from __future__ import annotations

import databento as db
import databento_dbn

from mbo_core.book import QUALITY_FIELDS
from mbo_core.dbn import open_mbo
from mbo_core.prices import parse_price
from mbo_core.rebuild import rebuild_batches
from tests.paths import CLX5
from tests.reference_book import RefBook

TOP_BIDS = [
    ("65.4", 1, 1), ("64.9", 10, 1), ("64.79", 1, 1), ("64.76", 1, 1), ("64.75", 9, 1),
    ("64.71", 5, 3), ("64.7", 8, 3), ("64.62", 7, 2), ("64.61", 10, 1), ("64.6", 1, 1),
]  # fmt: skip
TOP_ASKS = [
    ("64.78", 3, 1), ("64.79", 5, 3), ("64.8", 7, 2), ("64.81", 1, 1), ("64.82", 20, 3),
    ("64.83", 3, 2), ("64.84", 5, 3), ("64.85", 3, 2), ("64.86", 3, 1), ("64.87", 4, 2),
]  # fmt: skip


def replay(depth: int) -> dict:  # type: ignore[type-arg]
    source = open_mbo(CLX5)
    return rebuild_batches(
        source.batches(), source=str(CLX5), depth=depth, symbols=source.symbols
    ).to_json()


def decoded_records() -> list[databento_dbn.MBOMsg]:
    """The file as databento's own decoder reads it (independent of our numpy view)."""
    records = list(db.DBNStore.from_file(CLX5))
    assert all(isinstance(r, databento_dbn.MBOMsg) for r in records)
    return records  # type: ignore[return-value]


def test_record_and_event_counts() -> None:
    result = replay(depth=10)
    decoded = decoded_records()
    assert result["records"] == len(decoded) == 38_212
    assert result["events"] == sum(bool(int(r.flags) & 128) for r in decoded) == 32_053


def test_final_book_top_10_and_flags() -> None:
    (book,) = replay(depth=10)["books"]
    assert (book["instrument_id"], book["publisher_id"], book["symbol"]) == (432669, 1, "CLX5")
    assert [(lv["price"], lv["size"], lv["count"]) for lv in book["bids"]] == TOP_BIDS
    assert [(lv["price"], lv["size"], lv["count"]) for lv in book["asks"]] == TOP_ASKS
    assert book["crossed"] is True and book["locked"] is False
    # The last F_LAST record of the file.
    assert (book["ts_event"], book["sequence"]) == (1758751199999707295, 95242032)
    expected_quality = dict.fromkeys(QUALITY_FIELDS, 0)
    expected_quality.update(cancel_unknown_order=1224, modify_unknown_order=216)
    assert book["quality"] == expected_quality


def test_full_final_book_equals_the_reference_model() -> None:
    (book,) = replay(depth=0)["books"]
    model = RefBook()
    for r in decoded_records():
        model.apply(str(r.action), str(r.side), r.price, r.size, r.order_id, int(r.flags))
    for side, key in (("B", "bids"), ("A", "asks")):
        got = [(parse_price(lv["price"]), lv["size"], lv["count"]) for lv in book[key]]
        assert got == model.levels(side)
    assert (len(book["bids"]), len(book["asks"])) == (61, 52)
    assert sum(lv["count"] for lv in book["bids"] + book["asks"]) == len(model.where) == 147
    assert {k: v for k, v in book["quality"].items() if v} == model.quality
