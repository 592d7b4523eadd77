"""api.state without a broker: which fetched messages the live view may skip unread."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
from aiokafka import ConsumerRecord

from api.state import LiveState, _apply_all, superseded
from mbo_core.wire import Encoded
from tests.sink.wire import (
    CLX5_INSTRUMENT,
    F_LAST,
    Sent,
    bbo_message,
    clx5_records,
)

KEY = str(CLX5_INSTRUMENT).encode()


def _message(offset: int, *, consolidated: bool = False) -> ConsumerRecord[bytes, bytes]:
    """A bbo message about the records message at `offset` (its event after F_LAST number
    `offset`; with `consolidated`, its consolidated row too), as the consumer hands it over."""
    records = clx5_records()
    last = np.flatnonzero(records["flags"] & F_LAST)
    sent = Sent(partition=0, offset=offset, records=records)
    indexes = [int(last[offset])] * (2 if consolidated else 1)
    encoded: Encoded = bbo_message(sent, indexes)
    return ConsumerRecord(
        topic="mbo.bbo", partition=0, offset=offset, timestamp=0, timestamp_type=0,
        key=KEY, value=encoded.value, checksum=None, serialized_key_size=len(KEY),
        serialized_value_size=len(encoded.value), headers=tuple(encoded.headers),
    )  # fmt: skip


def _state_after(messages: list[ConsumerRecord[bytes, bytes]]) -> LiveState:
    state = LiveState()
    for message in messages:
        assert message.value is not None
        state.apply(message.value, message.headers)
    return state


def test_a_single_book_instruments_older_messages_of_a_fetch_are_skipped() -> None:
    state = _state_after([_message(1)])
    fetch = [_message(2), _message(3), _message(4)]
    assert superseded(state, fetch) == [True, True, False]
    # A redelivered message (a restarted processor) comes later with an older position: the
    # newer one stays, and the redelivered one is the one skipped.
    assert superseded(state, [_message(4), _message(3)]) == [False, True]


def test_nothing_is_skipped_before_an_instrument_is_known_or_when_it_has_several_books() -> None:
    fetch = [_message(2), _message(3)]
    assert superseded(LiveState(), fetch) == [False, False]
    several = _state_after([_message(1, consolidated=True)])
    assert superseded(several, fetch) == [False, False]


def test_skipping_keeps_exactly_the_state_of_reading_every_message() -> None:
    messages = [_message(offset) for offset in range(1, 40)]
    every = _state_after(messages)
    folded = _state_after(messages[:1])
    asyncio.run(_apply_all(folded, messages[1:]))
    assert folded.superseded == len(messages) - 2
    assert list(folded._entries) == list(every._entries) == [(CLX5_INSTRUMENT, 1)]
    held = every.bbo_json((CLX5_INSTRUMENT, 1))
    assert held is not None and folded.bbo_json((CLX5_INSTRUMENT, 1)) == held


def _in_run(message: ConsumerRecord[bytes, bytes], copy: int) -> ConsumerRecord[bytes, bytes]:
    """The same message as if its records message were of another run (replay copy)."""
    headers = tuple(
        (name, str(copy).encode() if name == "replay-copy" else value)
        for name, value in message.headers
    )
    return dataclasses.replace(message, headers=headers)


def test_a_new_run_replaces_the_books_of_the_last_one() -> None:
    """The processor starts a new run's books empty; the live view drops the last run's books
    with it (its consolidated book too), and a late copy of the last run's message (a
    restarted processor republishing) brings none of them back."""
    first = _message(0, consolidated=True)
    state = _state_after([first])
    assert state.bbo((CLX5_INSTRUMENT, None)) is not None  # the consolidated book of run 1
    state = _state_after([first, _in_run(_message(1), 3)])
    assert state.summary(CLX5_INSTRUMENT)["publishers"] == [1]
    assert state.bbo((CLX5_INSTRUMENT, None)) is None
    shown = state.bbo((CLX5_INSTRUMENT, 1))
    assert shown is not None
    assert first.value is not None
    state.apply(first.value, first.headers)
    assert state.bbo((CLX5_INSTRUMENT, None)) is None
    assert state.bbo((CLX5_INSTRUMENT, 1)) == shown
