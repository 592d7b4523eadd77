"""The book rebuild: events at F_LAST only, batch boundaries invisible, unclosed events counted."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from mbo_core.dbn import open_mbo
from mbo_core.rebuild import rebuild_batches
from mbo_core.schemas import BookJson
from tests.paths import CLX5
from tests.records import PX, add, cancel, to_array


def collect(batches: list[np.ndarray], depth: int = 5) -> tuple[list[BookJson], dict]:  # type: ignore[type-arg]
    events: list[BookJson] = []
    result = rebuild_batches(batches, source="test", depth=depth, on_event=events.append)
    return events, result.to_json()


def split(records: np.ndarray, size: int) -> list[np.ndarray]:
    return [records[i : i + size] for i in range(0, len(records), size)]


@pytest.fixture(scope="module")
def clx5() -> np.ndarray:
    return np.concatenate(list(open_mbo(CLX5).batches()))


@pytest.mark.parametrize("batch", [1, 7, 1000, 38_212])
def test_batch_boundaries_do_not_change_events_or_books(clx5: np.ndarray, batch: int) -> None:
    reference_events, reference = collect([clx5[:5000]])
    events, result = collect(split(clx5[:5000], batch))
    assert events == reference_events
    assert result == reference


def test_one_event_line_per_f_last_record(clx5: np.ndarray) -> None:
    events, result = collect([clx5[:3000]])
    assert len(events) == result["events"] == int(np.count_nonzero(clx5[:3000]["flags"] & 128))


def test_partial_event_is_held_back_until_its_f_last() -> None:
    recs = to_array(
        [
            add("B", 100 * PX, 1, 1, flags=0, instrument_id=1),  # event of 1 opens
            add("A", 200 * PX, 1, 2, instrument_id=2),  # instrument 2: a whole event
            add("B", 101 * PX, 1, 3, instrument_id=1),  # event of 1 closes
        ]
    )
    events, _ = collect([recs[:2], recs[2:]])
    assert [(e["instrument_id"], len(e["bids"]), len(e["asks"])) for e in events] == [
        (2, 0, 1),
        (1, 2, 0),
    ]


def test_unterminated_event_is_counted_and_not_applied() -> None:
    recs = to_array(
        [
            add("B", 100 * PX, 1, 1),
            cancel("B", 100 * PX, 1, 1, flags=0),  # its event never closes
        ]
    )
    events, result = collect([recs])
    (book,) = result["books"]
    assert [lv["price"] for lv in book["bids"]] == ["100"]
    assert book["quality"]["unterminated_event_records"] == 1
    assert result["records"] == 2 and result["events"] == 1 == len(events)


def test_multi_publisher_instrument_gets_consolidated_lines_and_book() -> None:
    recs = to_array(
        [
            add("B", 100 * PX, 2, 1, publisher_id=1),
            add("B", 100 * PX, 3, 1, publisher_id=2),
            add("A", 101 * PX, 4, 2, publisher_id=2),
        ]
    )
    events, result = collect([recs])
    assert [e["publisher_id"] for e in events] == [1, 2, None, 2, None]
    assert events[2]["bids"] == [{"price": "100", "size": 5, "count": 2}]
    assert [b["publisher_id"] for b in result["books"]] == [1, 2, None]
    assert result["books"][2]["asks"] == [{"price": "101", "size": 4, "count": 1}]


def test_instruments_split_over_workers_give_the_same_result() -> None:
    """workers > 1 (mbo book without --events) splits instruments over threads: same books,
    same counts, consolidated books and open tails included."""
    rng = np.random.default_rng(3)
    recs = to_array(
        [
            add("B" if i % 2 else "A", (100 + i % 7) * PX, 1, i,
                flags=128 if rng.random() < 0.5 else 0,
                instrument_id=int(rng.integers(1, 6)), publisher_id=int(rng.integers(1, 3)))
            for i in range(3000)
        ]
    )  # fmt: skip
    one = rebuild_batches(split(recs, 256), source="t").to_json()
    for workers in (2, 3, 7):
        assert rebuild_batches(split(recs, 256), source="t", workers=workers).to_json() == one
    assert any(b["publisher_id"] is None for b in one["books"])
    assert sum(b["quality"]["unterminated_event_records"] for b in one["books"]) > 0


def test_a_failing_batch_stops_the_parallel_rebuild() -> None:
    def batches() -> Iterator[np.ndarray]:
        yield to_array([add("B", PX, 1, 1, instrument_id=1), add("B", PX, 1, 2, instrument_id=2)])
        raise ValueError("truncated file")

    with pytest.raises(ValueError, match="truncated file"):
        rebuild_batches(batches(), source="t", workers=2)
