"""What the processor publishes, without Kafka: BBO changes, snapshots, determinism."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from book_processor.publishing import BookPublisher, Published
from mbo_core.dbn import open_mbo
from mbo_core.rebuild import rebuild_batches
from mbo_core.schemas import BookJson
from mbo_core.wire import end_of_stream_headers, records_headers
from tests.paths import CLX5
from tests.published import bbo_rows as bbo_rows_of
from tests.published import snapshot_rows
from tests.records import PX, add, cancel, modify, to_array

SECOND = 1_000_000_000
KEY = b"432669"


def chunks(records: np.ndarray, size: int) -> list[np.ndarray]:
    """Messages of whole events of about `size` records, as the producer cuts them."""
    ends = np.flatnonzero(records["flags"] & 128) + 1
    cuts = [0]
    for end in ends:
        if end - cuts[-1] >= size:
            cuts.append(int(end))
    if cuts[-1] != len(records):
        cuts.append(len(records))
    return [records[a:b] for a, b in itertools.pairwise(cuts)]


def publish(
    messages: list[np.ndarray], *, interval: int = SECOND, key: bytes = KEY, eos: bool = True
) -> list[Published]:
    publisher = BookPublisher(3, snapshot_interval_ns=interval, snapshot_depth=10)
    out = [
        publisher.process(offset, key, m.tobytes(), headers(len(m)))
        for offset, m in enumerate(messages)
    ]
    if eos:
        out.append(publisher.process(len(messages), key, b"", eos_headers()))
    return out


def headers(n: int) -> list[tuple[str, bytes]]:
    return records_headers(dataset="GLBX.MDP3", symbol="CLX5", sent_ns=123, records=n)


def eos_headers() -> list[tuple[str, bytes]]:
    return end_of_stream_headers(dataset="GLBX.MDP3", symbol="CLX5", sent_ns=456)


def bbo_rows(published: list[Published]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for out in published:
        if out.bbo is None:
            continue
        fields = (
            "publisher_id", "ts_event", "ts_recv", "sequence", "bid_price", "bid_size",
            "bid_count", "ask_price", "ask_size", "ask_count", "crossed", "locked",
        )  # fmt: skip
        rows.extend(tuple(row[f] for f in fields) for row in bbo_rows_of(out.bbo))
    return rows


def snapshots(published: list[Published]) -> list[dict[str, Any]]:
    """Every snapshot published, with its message's header fields."""
    return [s for p in published if p.snapshots for s in snapshot_rows(p.snapshots)]


@pytest.fixture(scope="module")
def clx5() -> np.ndarray:
    return np.concatenate(list(open_mbo(CLX5).batches()))


def test_bbo_rows_are_the_best_level_changes_of_every_event(clx5: np.ndarray) -> None:
    # Independent derivation: the book after every event (mbo book's events) at depth 1; a row
    # wherever the best levels differ from the previous event's.
    events: list[BookJson] = []
    rebuild_batches([clx5], source="clx5", depth=1, on_event=events.append)
    expected, previous = [], None
    for e in events:
        bid = (e["bids"][0]["price"], e["bids"][0]["size"], e["bids"][0]["count"]) if e["bids"] \
            else (None, 0, 0)  # fmt: skip
        ask = (e["asks"][0]["price"], e["asks"][0]["size"], e["asks"][0]["count"]) if e["asks"] \
            else (None, 0, 0)  # fmt: skip
        if (bid, ask) != (previous or ((None, 0, 0), (None, 0, 0))):
            expected.append((1, e["ts_event"], e["ts_recv"], e["sequence"], *bid, *ask,
                             e["crossed"], e["locked"]))  # fmt: skip
        previous = (bid, ask)
    rows = bbo_rows(publish(chunks(clx5, 1000)))
    assert len(rows) == 17_222
    assert rows == expected


def test_output_does_not_depend_on_how_records_are_chunked(clx5: np.ndarray) -> None:
    small, large = publish(chunks(clx5, 50)), publish(chunks(clx5, 5000))
    assert bbo_rows(small) == bbo_rows(large)

    def content(snaps: list[dict[str, Any]]) -> list[Any]:
        skip = ("source", "record_index")
        return [{k: v for k, v in s.items() if k not in skip} for s in snaps]

    assert content(snapshots(small)) == content(snapshots(large))


def test_a_rebuilt_publisher_publishes_byte_identical_messages(clx5: np.ndarray) -> None:
    messages = chunks(clx5, 700)
    original = publish(messages)
    rebuilt = BookPublisher(3, snapshot_interval_ns=SECOND, snapshot_depth=10)
    for offset, m in enumerate(messages[:20]):  # replayed silently, as after a restart
        rebuilt.process(offset, KEY, m.tobytes(), headers(len(m)))
    resumed = [
        rebuilt.process(offset, KEY, m.tobytes(), headers(len(m)))
        for offset, m in enumerate(messages)
        if offset >= 20
    ]
    resumed.append(rebuilt.process(len(messages), KEY, b"", eos_headers()))
    assert [(o.bbo, o.snapshots) for o in original[20:]] == [(o.bbo, o.snapshots) for o in resumed]
    assert sum(o.snapshot_count for o in original) > 100


def test_snapshots_are_conflated_per_interval_of_event_time() -> None:
    recs = to_array(
        [
            add("B", 100 * PX, 1, 1, ts_event=10 * SECOND),
            add("B", 101 * PX, 1, 2, ts_event=10 * SECOND + 5),  # same second: no snapshot
            add("A", 105 * PX, 1, 3, ts_event=11 * SECOND),  # next second: snapshot
            cancel("A", 105 * PX, 1, 3, ts_event=13 * SECOND),
        ]
    )
    snaps = snapshots(publish([recs], key=b"1"))
    assert [(s["ts_event"], s["final"]) for s in snaps] == [
        (10 * SECOND, False),
        (11 * SECOND, False),
        (13 * SECOND, False),
        (13 * SECOND, True),  # the end-of-stream state
    ]
    assert snaps[1]["asks"] == [{"price": "105", "size": 1, "count": 1}]
    assert [s["record_index"] for s in snaps] == [0, 2, 3, 0]
    assert snaps[0]["depth"] == 10


def test_consolidated_rows_follow_publisher_changes() -> None:
    recs = to_array(
        [
            add("B", 100 * PX, 2, 1, publisher_id=1),
            add("B", 100 * PX, 3, 1, publisher_id=2),
            add("B", 99 * PX, 5, 2, publisher_id=2),  # p2's best unchanged: no rows
            modify("B", 101 * PX, 3, 1, publisher_id=2),
            add("A", 103 * PX, 4, 3, publisher_id=1),
        ]
    )
    rows = bbo_rows(publish([recs], key=b"1"))
    picked = [(r[0], r[4], r[5], r[6], r[7]) for r in rows]  # publisher, bid px/sz/ct, ask px
    assert picked == [
        (1, "100", 2, 1, None),
        (2, "100", 3, 1, None),
        (None, "100", 5, 2, None),  # both publishers at 100: sizes and counts summed
        (2, "101", 3, 1, None),
        (None, "101", 3, 1, None),
        (1, "100", 2, 1, "103"),
        (None, "101", 3, 1, "103"),
    ]


def test_end_of_stream_publishes_every_book_and_the_consolidated_one() -> None:
    recs = to_array([add("B", 100 * PX, 2, 1, publisher_id=1), add("A", 101 * PX, 3, 1,
                                                                    publisher_id=2)])  # fmt: skip
    final = publish([recs], key=b"1")[-1]
    assert final.end_of_stream and final.snapshots is not None
    snaps = snapshot_rows(final.snapshots)
    assert [(s["publisher_id"], s["final"]) for s in snaps] == [(1, True), (2, True), (None, True)]
    assert snaps[2]["bids"] == [{"price": "100", "size": 2, "count": 1}]
    assert snaps[2]["asks"] == [{"price": "101", "size": 3, "count": 1}]


def test_last_snapshot_equals_mbo_book(clx5: np.ndarray) -> None:
    (final_book,) = rebuild_batches([clx5], source="x", depth=10, symbols={432669: "CLX5"}).books
    last = snapshots(publish(chunks(clx5, 1000)))[-1]
    assert last["final"] is True
    assert {k: last[k] for k in final_book} == final_book


def poison(records: np.ndarray) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """One malformed records message of each kind (key, value, headers)."""
    bad_action = records[:10].copy()
    bad_action["action"][3] = ord("X")
    other_instrument = records[:10].copy()
    other_instrument["instrument_id"][5] += 1
    return [
        (KEY, np.random.default_rng(7).bytes(100), []),  # random bytes
        (KEY, records[:3].tobytes() + b"x", headers(3)),  # wrong length
        (KEY, bad_action.tobytes(), headers(10)),  # bad action
        (b"not-an-instrument", records[:10].tobytes(), headers(10)),  # bad key
        (KEY, other_instrument.tobytes(), headers(10)),  # key is not every record's instrument
        (KEY, b"", [("mbo-schema", b"dbn.mbp-1")]),  # another topic's message
        (KEY, records[:10].tobytes(), [*headers(10), ("dbn-version", b"9")]),  # unknown version
    ]


def test_malformed_messages_are_refused_and_change_nothing(clx5: np.ndarray) -> None:
    messages = chunks(clx5, 1000)
    clean = publish(messages)
    publisher = BookPublisher(3, snapshot_interval_ns=SECOND, snapshot_depth=10)
    out: list[Published] = []
    offset = 0
    bad = poison(clx5)
    reasons = []
    for i, m in enumerate(messages):
        if i < len(bad):  # a poison message before each of the first good ones
            key, value, hdrs = bad[i]
            refused = publisher.process(offset, key, value, hdrs)
            assert refused.rejected is not None and refused.bbo is refused.snapshots is None
            reasons.append(refused.rejected.reason)
            offset += 1
            assert publisher.next_offset == offset
        out.append(publisher.process(offset, KEY, m.tobytes(), headers(len(m))))
        offset += 1
    out.append(publisher.process(offset, KEY, b"", eos_headers()))
    assert reasons == ["length", "length", "action", "key", "key", "schema", "version"]
    assert all(o.rejected is None for o in out)
    assert [(o.bbo.value if o.bbo else None) for o in out] == [
        (o.bbo.value if o.bbo else None) for o in clean
    ]
    assert bbo_rows(out) == bbo_rows(clean)


def run_headers(n: int, replay_id: str, copy: int = 1) -> list[tuple[str, bytes]]:
    return records_headers(
        dataset="GLBX.MDP3", symbol="CLX5", sent_ns=123, records=n, replay_id=replay_id,
        replay_copy=copy, instrument_records=n,
    )  # fmt: skip


def run_eos_headers(replay_id: str, copy: int = 1) -> list[tuple[str, bytes]]:
    return end_of_stream_headers(
        dataset="GLBX.MDP3", symbol="CLX5", sent_ns=456, replay_id=replay_id, replay_copy=copy
    )


def publish_runs(
    publisher: BookPublisher, runs: list[tuple[str, int, list[np.ndarray]]], key: bytes = KEY
) -> list[list[Published]]:
    """Each run's messages then its end-of-stream marker, one offset after the other."""
    offset = publisher.next_offset
    out = []
    for replay_id, copy, messages in runs:
        published = []
        for m in messages:
            published.append(publisher.process(offset, key, m.tobytes(),
                                               run_headers(len(m), replay_id, copy)))  # fmt: skip
            offset += 1
        published.append(publisher.process(offset, key, b"", run_eos_headers(replay_id, copy)))
        offset += 1
        out.append(published)
    return out


def rows_without_position(published: list[Published]) -> list[dict[str, Any]]:
    """BBO and snapshot rows without where they come from (offsets differ between runs)."""
    drop = {"source", "replay_id", "replay_copy"}
    rows = [r for p in published if p.bbo for r in bbo_rows_of(p.bbo)] + snapshots(published)
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_a_new_run_starts_from_empty_books(clx5: np.ndarray) -> None:
    """A second replay of the same data (another replay id) publishes exactly what a fresh
    processor publishes for it: none of the first run's orders, counters from zero, and its
    rows say which run they belong to."""
    messages = chunks(clx5, 1000)
    half = messages[: len(messages) // 2]  # the first replay stopped halfway: no end marker
    publisher = BookPublisher(3, snapshot_interval_ns=SECOND, snapshot_depth=10)
    for offset, m in enumerate(half):
        publisher.process(offset, KEY, m.tobytes(), run_headers(len(m), "first"))
    (second,) = publish_runs(publisher, [("second", 1, messages)])
    (fresh,) = publish_runs(
        BookPublisher(3, snapshot_interval_ns=SECOND, snapshot_depth=10),
        [("second", 1, messages)],
    )
    assert rows_without_position(second) == rows_without_position(fresh)
    final = snapshot_rows(second[-1].snapshots)  # type: ignore[arg-type]
    assert {(r["replay_id"], r["replay_copy"]) for r in final} == {("second", 1)}
    assert final[-1]["quality"] == snapshot_rows(fresh[-1].snapshots)[-1]["quality"]  # type: ignore[arg-type]


def test_every_copy_of_a_looped_replay_is_a_run_of_its_own() -> None:
    """Copy 2 starts empty even without the Clear between copies, and its counters start at
    zero: the cancel of an unknown order in copy 1 is not counted again in copy 2."""
    recs = to_array([cancel("B", 100 * PX, 1, 9), add("B", 100 * PX, 2, 1),
                     add("A", 101 * PX, 3, 2)])  # fmt: skip
    publisher = BookPublisher(3, snapshot_interval_ns=SECOND, snapshot_depth=10)
    copies = publish_runs(publisher, [("r", 1, [recs]), ("r", 2, [recs])], key=b"1")
    finals = [snapshot_rows(c[-1].snapshots)[-1] for c in copies]  # type: ignore[arg-type]
    assert finals[0]["bids"] == finals[1]["bids"] == [{"price": "100", "size": 2, "count": 1}]
    assert finals[0]["quality"] == finals[1]["quality"]
    assert finals[1]["quality"]["cancel_unknown_order"] == 1
    assert bbo_rows(copies[0]) == bbo_rows(copies[1])


def test_a_run_with_fewer_publishers_has_no_trace_of_the_others() -> None:
    """Publisher 2 quoted in the first run only: the second run's books and consolidated rows
    are those of publisher 1 alone, as a fresh processor publishes them."""
    two = to_array([add("B", 100 * PX, 2, 1, publisher_id=1), add("A", 101 * PX, 3, 1,
                                                                   publisher_id=2)])  # fmt: skip
    one = to_array([add("B", 99 * PX, 4, 7, publisher_id=1)])
    publisher = BookPublisher(3, snapshot_interval_ns=SECOND, snapshot_depth=10)
    _, second = publish_runs(publisher, [("a", 1, [two]), ("b", 1, [one])], key=b"1")
    (fresh,) = publish_runs(
        BookPublisher(3, snapshot_interval_ns=SECOND, snapshot_depth=10),
        [("b", 1, [one])],
        key=b"1",
    )
    assert rows_without_position(second) == rows_without_position(fresh)
    assert [s["publisher_id"] for s in snapshots(second) if s["final"]] == [1]
