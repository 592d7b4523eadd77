"""The engine's output rows, named for the code that reads them.

`BookEngine.apply_tracked` returns its BBO changes ("taps") and snapshots as int64 matrices
that the compiled kernel writes without allocating; `BookEngine.snapshot_row` writes one
snapshot row. These classes give their columns' positions, so a reader (the book processor)
depends on this documented layout, not on the kernel's internals.
"""

from __future__ import annotations

from mbo_core.book import kernel as _k


class TapColumns:
    """A tap: one event that changed its book's best levels."""

    RECORD = _k.T_RECORD  # index of the event's last record in the applied batch
    BOOK = _k.T_BOOK  # the engine's book index
    TS_EVENT = _k.T_TS_EVENT
    TS_RECV = _k.T_TS_RECV
    SEQUENCE = _k.T_SEQUENCE
    #: bid price, size, count, ask price, size, count (an empty side: price UNDEF_PRICE)
    BBO = slice(_k.T_BBO, _k.T_BBO + 6)
    QUALITY = slice(_k.T_QUALITY, _k.T_QUALITY + _k.N_QUALITY)  # counters, QUALITY_FIELDS order
    WIDTH = _k.TAP_COLUMNS


class SnapshotColumns:
    """A snapshot row of `depth` levels a side."""

    PUBLISHER = _k.S_PUBLISHER
    TS_EVENT = _k.S_TS_EVENT
    TS_RECV = _k.S_TS_RECV
    SEQUENCE = _k.S_SEQUENCE
    RECORD = _k.S_RECORD  # index of the event's last record in the applied batch
    FLAGS = _k.S_FLAGS  # the wire's EXT_* flags (mbo_core.wire.layouts); the kernel writes 0
    QUALITY = slice(_k.S_QUALITY, _k.S_LEVELS)  # counters, QUALITY_FIELDS order
    #: first level column: bids (price, size, count) x depth, then asks x depth, padded with
    #: UNDEF_PRICE, 0, 0
    LEVELS = _k.S_LEVELS

    @staticmethod
    def width(depth: int) -> int:
        return _k.S_LEVELS + 6 * depth
