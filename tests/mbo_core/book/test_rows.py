"""mbo_core.book.rows: the columns of the engine's taps and snapshot rows, read as named."""

from __future__ import annotations

from mbo_core.book import QUALITY_FIELDS, UNDEF_PRICE, BookEngine
from mbo_core.book.rows import SnapshotColumns as S
from mbo_core.book.rows import TapColumns as T
from tests.records import PX, add, cancel, to_array

DEPTH = 2


def test_taps_and_snapshots_read_through_their_columns() -> None:
    records = to_array(
        [
            add("B", 64 * PX, 3, 1, publisher_id=7, sequence=11),
            add("A", 65 * PX, 4, 2, publisher_id=7, sequence=12),
            cancel("B", 64 * PX, 1, 99, publisher_id=7, sequence=13),  # unknown order: counted
        ]
    )
    due: list[tuple[int, int]] = []
    taps, snapshots = BookEngine().apply_tracked(
        records,
        snapshot_interval_ns=1,
        snapshot_depth=DEPTH,
        on_snapshot_due=lambda book, record: due.append((book, record)),
    )
    assert due == []  # the book is alone on its instrument: the kernel writes its snapshots
    assert taps.shape[1] == T.WIDTH
    assert taps[:, T.RECORD].tolist() == [0, 1]  # the Cancel moved no best level
    assert taps[:, T.BOOK].tolist() == [0, 0]
    assert taps[:, T.SEQUENCE].tolist() == [11, 12]
    assert taps[:, T.TS_EVENT].tolist() == records["ts_event"][:2].tolist()
    assert taps[:, T.TS_RECV].tolist() == records["ts_recv"][:2].tolist()
    assert taps[1, T.BBO].tolist() == [64 * PX, 3, 1, 65 * PX, 4, 1]
    assert taps[0, T.BBO].tolist()[3] == UNDEF_PRICE
    assert len(taps[0, T.QUALITY]) == len(QUALITY_FIELDS)

    assert snapshots.shape[1] == S.width(DEPTH)
    last = snapshots[-1]
    assert last[S.RECORD] == 2
    assert last[S.PUBLISHER] == 7
    assert last[S.SEQUENCE] == 13
    assert last[S.TS_EVENT] == records["ts_event"][2]
    assert last[S.TS_RECV] == records["ts_recv"][2]
    assert last[S.FLAGS] == 0
    quality = dict(zip(QUALITY_FIELDS, last[S.QUALITY].tolist(), strict=True))
    assert quality["cancel_unknown_order"] == 1
    bids, asks = last[S.LEVELS :].reshape(2, DEPTH, 3).tolist()
    assert bids == [[64 * PX, 3, 1], [UNDEF_PRICE, 0, 0]]
    assert asks == [[65 * PX, 4, 1], [UNDEF_PRICE, 0, 0]]
