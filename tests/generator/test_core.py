"""The simulated stream: exact size, event shapes, timestamps, sequences, never-crossed books."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from generator.api import generate_records
from generator.core import (
    DEFAULT_START_NS,
    MAX_INSTRUMENTS,
    PRODUCTS,
    GeneratorConfig,
    MarketSimulator,
    instrument_spec,
)
from mbo_core.book import F_LAST, F_SNAPSHOT, UNDEF_PRICE, BookEngine
from tests.generator.streams import actions, event_bounds, stream

F_LAST_BIT = F_LAST


@pytest.mark.parametrize(
    ("instruments", "publishers", "records"),
    [(1, 1, 1), (1, 1, 2), (4, 3, 5), (2, 2, 1_000), (3, 1, 70_001)],
)
def test_record_count_is_exact_and_the_stream_ends_on_an_event_boundary(
    instruments: int, publishers: int, records: int
) -> None:
    config = GeneratorConfig(instruments=instruments, publishers=publishers, records=records)
    chunks = list(generate_records(config))
    total = np.concatenate(chunks)
    assert len(total) == records
    for chunk in chunks:  # chunks hold whole events
        assert chunk["flags"][-1] & F_LAST


@pytest.mark.parametrize("busy", [False, True])
def test_records_of_an_event_share_book_and_timestamps_and_only_the_last_is_flagged_last(
    busy: bool,
) -> None:
    records = stream(busy=busy)
    for start, end in event_bounds(records):
        event = records[start:end]
        for field in ("instrument_id", "publisher_id", "ts_event", "ts_recv", "ts_in_delta"):
            assert (event[field] == event[field][0]).all(), field
        flagged = event["flags"] & F_LAST != 0
        assert flagged[-1] and not flagged[:-1].any()


def test_timestamps_are_ordered_and_consistent() -> None:
    records = stream()
    ts_event = records["ts_event"].astype(np.int64)
    ts_recv = records["ts_recv"].astype(np.int64)
    assert (np.diff(ts_recv) >= 0).all()  # the file is in receive order, like a capture
    assert (ts_recv > ts_event).all()
    delta = records["ts_in_delta"].astype(np.int64)
    assert (delta > 0).all() and (delta <= ts_recv - ts_event).all()
    keys = records["instrument_id"].astype(np.int64) * 65_536 + records["publisher_id"]
    for key in np.unique(keys):
        mine = keys == key
        assert (np.diff(ts_event[mine]) >= 0).all()


def test_sequence_numbers_count_messages_per_publisher_and_channel() -> None:
    records = stream(busy=True)
    groups = records["publisher_id"].astype(np.int64) * 256 + records["channel_id"]
    for group in np.unique(groups):
        sequence = records["sequence"][groups == group].astype(np.int64)
        steps = np.diff(sequence)
        # A message's records share its number; the next message has the next one.
        assert set(steps.tolist()) <= {0, 1}
    for start, end in event_bounds(records):
        event = records[start:end]
        sequence = event["sequence"].astype(np.int64)
        if event["action"][0] == ord("T"):
            summary = np.isin(event["action"], [ord("T"), ord("F")])
            assert (sequence[summary] == sequence[0]).all()
            assert (sequence[~summary] == sequence[0] + 1).all()
        else:
            assert (sequence == sequence[0]).all()


def test_channels_group_instruments_and_publishers_are_glbx_style() -> None:
    records = stream(instruments=10, publishers=3, records=20_000)
    assert set(records["publisher_id"].tolist()) == {1, 2, 3}
    channel_of = dict(
        zip(records["instrument_id"].tolist(), records["channel_id"].tolist(), strict=True)
    )
    assert len(channel_of) == 10
    assert set(channel_of.values()) == {1, 2}  # 8 instruments per channel
    assert (records["rtype"] == 0xA0).all() and (records["length"] == 14).all()


def test_trade_events_have_the_cme_layout() -> None:
    records = stream(busy=True)
    trades = 0
    partial_fills = 0
    rests = 0
    for start, end in event_bounds(records):
        event = records[start:end]
        kinds = actions(event)
        if kinds[0] != "T":
            continue
        trades += 1
        aggressor = int(event["order_id"][0])
        aggressor_side = int(event["side"][0])
        resting_side = ord("A") if aggressor_side == ord("B") else ord("B")
        n_summary = kinds.rindex("F") + 1
        summary = event[:n_summary]
        fills = summary[summary["action"] == ord("F")]
        # Each T carries the aggressor and the total of the fills at its price that follow it.
        for k in np.flatnonzero(summary["action"] == ord("T")).tolist():
            following = actions(summary[k + 1 :])
            level_fills = summary[k + 1 : k + 1 + len(following) - len(following.lstrip("F"))]
            assert int(summary["order_id"][k]) == aggressor
            assert int(summary["side"][k]) == aggressor_side
            assert (level_fills["price"] == summary["price"][k]).all()
            assert int(summary["size"][k]) == int(level_fills["size"].sum())
        assert (fills["side"] == resting_side).all()
        # Then one C (filled in full) or M (what is left) per fill, in fill order.
        updates = event[n_summary : n_summary + len(fills)]
        assert actions(updates).strip("CM") == ""
        assert (updates["order_id"] == fills["order_id"]).all()
        assert (updates["price"] == fills["price"]).all()
        full = updates["action"] == ord("C")
        assert (updates["size"][full] == fills["size"][full]).all()
        assert full[:-1].all()  # only the last order hit can be left partly filled
        partial_fills += int((~full).sum())
        # An unfilled rest goes on the book in the same event, under the aggressor's id.
        tail = event[n_summary + len(fills) :]
        assert len(tail) <= 1
        if len(tail):
            rests += 1
            assert tail["action"][0] == ord("A") and int(tail["order_id"][0]) == aggressor
            assert int(tail["side"][0]) == aggressor_side
            assert full.all()
    assert trades > 500 and partial_fills > 50 and rests > 50


def test_books_are_never_crossed_or_locked_after_an_event() -> None:
    for busy in (False, True):
        engine = BookEngine()
        records = stream(busy=busy)
        for book in engine.apply_events(records):
            view = engine.view(book, 1)
            assert not view.crossed and not view.locked
        assert all(sum(engine.quality(b).values()) == 0 for b in range(engine.book_count))


def test_clear_and_snapshot_events_rebuild_the_same_book() -> None:
    records = stream(busy=True)
    engine = BookEngine()
    snapshots = 0
    for start, end in event_bounds(records):
        event = records[start:end]
        book = engine.book_index(
            int(event["instrument_id"][0]), int(event["publisher_id"][0]), create=True
        )
        is_snapshot = event["action"][0] == ord("R")
        before = engine.view(book, 0) if is_snapshot else None
        engine.apply(event)
        if not is_snapshot:
            continue
        snapshots += 1
        clear = event[0]
        assert (clear["side"], clear["price"], clear["size"], clear["order_id"]) == (
            ord("N"),
            UNDEF_PRICE,
            0,
            0,
        )
        assert (event["flags"] & F_SNAPSHOT != 0).all()
        assert actions(event[1:]) == "A" * (len(event) - 1)
        assert before is not None
        after = engine.view(book, 0)
        assert np.array_equal(before.bids, after.bids) and np.array_equal(before.asks, after.asks)
        # Queue order survives too: the adds list each level front to back.
        for price in before.bids[:, 0].tolist():
            queue = engine.queue(book, "B", price)
            mine = event[(event["side"] == ord("B")) & (event["price"] == price)]
            assert [o for o, _ in queue] == mine["order_id"].tolist()
    assert snapshots > 20


def test_same_seed_same_stream_other_seed_another() -> None:
    config = GeneratorConfig(instruments=2, publishers=2, records=30_000, seed=5)
    first = np.concatenate(list(generate_records(config)))
    again = np.concatenate(list(generate_records(config)))
    other = np.concatenate(
        list(generate_records(GeneratorConfig(instruments=2, publishers=2, records=30_000, seed=6)))
    )
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_event_mix_and_sizes_follow_the_clx5_calibration() -> None:
    records = stream(instruments=1, publishers=1, records=200_000, seed=3)
    bounds = event_bounds(records)
    kinds = Counter(chr(records["action"][start]) for start, _ in bounds)
    share = {kind: count / len(bounds) for kind, count in kinds.items()}
    assert share["A"] == pytest.approx(0.466, abs=0.03)  # CLX5 46.6 %
    assert share["C"] == pytest.approx(0.413, abs=0.03)  # 41.3 %
    assert share["M"] == pytest.approx(0.071, abs=0.02)  # 7.1 %
    assert share["T"] == pytest.approx(0.050, abs=0.01)  # 5.0 %
    adds = records[records["action"] == ord("A")]
    assert (adds["size"] == 1).mean() == pytest.approx(0.69, abs=0.05)
    gaps = np.diff(records["ts_event"][records["flags"] & F_LAST_BIT != 0].astype(np.int64))
    assert 100_000 < np.median(gaps) < 500_000  # CLX5: 244 us


def test_publishers_of_an_instrument_quote_around_one_price() -> None:
    simulator = MarketSimulator(GeneratorConfig(instruments=2, publishers=3, records=150_000))
    for _ in simulator.chunks():
        pass
    mids: dict[int, list[float]] = {}
    for state in simulator.book_states(1):
        mid = (state.bids[0, 0] + state.asks[0, 0]) / 2 / state.instrument.tick
        mids.setdefault(state.instrument.instrument_id, []).append(mid)
    for instrument_mids in mids.values():
        assert max(instrument_mids) - min(instrument_mids) <= 10  # ticks


def test_instruments_are_invented_futures_with_varied_ticks() -> None:
    specs = GeneratorConfig(instruments=MAX_INSTRUMENTS).instrument_specs()
    assert len({s.symbol for s in specs}) == MAX_INSTRUMENTS
    assert len({s.instrument_id for s in specs}) == MAX_INSTRUMENTS
    assert [s.symbol for s in specs[:3]] == ["XAAF6", "XAAG6", "XAAH6"]
    assert {s.tick for s in specs} == {p.tick for p in PRODUCTS}
    assert all(s.start_price > 0 and s.start_price % s.tick == 0 for s in specs)
    assert all(1 <= s.channel_id <= 255 for s in specs)
    # The seed moves start prices; the rest of an instrument depends on its index only.
    assert instrument_spec(7, 3, DEFAULT_START_NS) != instrument_spec(8, 3, DEFAULT_START_NS)
    assert (
        instrument_spec(7, 3, DEFAULT_START_NS).symbol
        == instrument_spec(8, 3, DEFAULT_START_NS).symbol
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"instruments": 0},
        {"instruments": MAX_INSTRUMENTS + 1},
        {"publishers": 0},
        {"publishers": 17},
        {"instruments": 1000, "publishers": 5},
        {"records": 0},
        {"seed": -1},
        {"start_ns": 0},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        GeneratorConfig(**kwargs)
