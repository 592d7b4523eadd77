"""What the event topics share: one message cut into pieces that each fit a produce request."""

from __future__ import annotations

import numpy as np
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from mbo_core.prices import UNDEF_PRICE
from mbo_core.records import MBO_DTYPE
from mbo_core.wire import (
    H_PROCESSED_NS,
    Encoded,
    EventContext,
    decode_bbo,
    decode_snapshots,
    encode_bbo,
    encode_snapshots,
    instrument_key,
    message_bytes,
    split_events,
)
from mbo_core.wire.layouts import EXT_DTYPE

CONTEXT = EventContext(
    instrument_id=4_294_967_295, symbol="CLX5", source_partition=3, source_offset=991,
    sent_ns=1_765_000_000_000_000_000, replay_id="mbo-run-0123456789abcdef", replay_copy=2,
)  # fmt: skip
STAMP = (H_PROCESSED_NS, b"1765000000000000123")


def _bbo(n: int) -> Encoded:
    rng = np.random.default_rng(n)
    bbo = rng.integers(1, 10**12, size=(n, 6))
    bbo[::7, 3] = UNDEF_PRICE
    encoded = encode_bbo(
        CONTEXT,
        publisher_id=rng.integers(1, 4, size=n),
        record_index=np.arange(n) // 2,
        ts_event=np.arange(n) + 1_000,
        ts_recv=np.arange(n) + 2_000,
        sequence=np.arange(n),
        bbo=bbo,
        quality=rng.integers(0, 5, size=(n, 8)),
        consolidated=np.arange(n) % 2 == 1,
        closing=np.zeros(n, dtype=MBO_DTYPE),
    )
    return Encoded(encoded.value, [*encoded.headers, STAMP])


def _snapshots(n: int) -> Encoded:
    levels = np.tile([100, 1, 1], (n, 10, 1))
    encoded = encode_snapshots(
        CONTEXT,
        depth=10,
        publisher_id=np.ones(n, dtype=np.int64),
        record_index=np.arange(n),
        ts_event=np.arange(n),
        ts_recv=np.arange(n),
        sequence=np.arange(n),
        bids=levels,
        asks=levels,
        quality=np.zeros((n, 8), dtype=np.int64),
        consolidated=np.zeros(n, dtype=bool),
        final=np.zeros(n, dtype=bool),
    )
    return Encoded(encoded.value, [*encoded.headers, STAMP])


def _client_bytes(message: Encoded) -> int:
    """What aiokafka holds against max_request_size for this keyed message."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        instrument_key(CONTEXT.instrument_id), message.value, message.headers
    )
    return size


def test_a_message_that_fits_is_sent_as_it_is() -> None:
    message = _bbo(100)
    assert split_events(message, 1024 * 1024) == [message]
    assert _client_bytes(message) <= message_bytes(message.value, message.headers)


@pytest.mark.parametrize("rows", [7_000, 8_191, 10_000])
def test_a_large_bbo_message_is_cut_into_pieces_that_read_as_the_whole(rows: int) -> None:
    message = _bbo(rows)
    limit = 1024 * 1024
    assert message_bytes(message.value, message.headers) > limit
    pieces = split_events(message, limit)
    assert len(pieces) in (-(-rows * 152 // limit), -(-rows * 152 // limit) + 1)
    sizes = [len(p.value) // 80 for p in pieces]
    assert max(sizes) - min(sizes) <= 1  # as even as possible
    for piece in pieces:
        assert _client_bytes(piece) <= message_bytes(piece.value, piece.headers) <= limit
    whole = decode_bbo(message.value, message.headers, instrument_key(CONTEXT.instrument_id))
    read = [decode_bbo(p.value, p.headers, instrument_key(CONTEXT.instrument_id)) for p in pieces]
    assert {r.context for r in read} == {whole.context}
    assert np.concatenate([r.records for r in read]).tobytes() == whole.records.tobytes()
    assert np.concatenate([r.ext for r in read]).tobytes() == whole.ext.tobytes()
    # Every piece carries the other headers unchanged, the processor's stamp included.
    for piece in pieces:
        assert [h for h in piece.headers if h[0] != "ext"] == [
            h for h in message.headers if h[0] != "ext"
        ]


def test_snapshots_are_cut_at_whole_records() -> None:
    message = _snapshots(300)  # 300 x (368 + 72) bytes
    pieces = split_events(message, 64 * 1024)
    assert len(pieces) == 3
    read = [decode_snapshots(p.value, p.headers) for p in pieces]
    assert [len(r) for r in read] == [100, 100, 100]
    assert np.concatenate([r.ext["record_index"] for r in read]).tolist() == list(range(300))
    assert all(len(p.headers[3][1]) == 100 * EXT_DTYPE.itemsize for p in pieces)


def test_a_limit_below_one_event_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="do not fit a 512-byte message"):
        split_events(_snapshots(5), 512)
