"""The records topic's decoder refuses every malformed message whole, saying why."""

from __future__ import annotations

import numpy as np
import pytest

from mbo_core.wire import MalformedMessage, decode_records, end_of_stream_headers, records_headers
from tests.records import add, cancel, to_array

KEY = b"1"


def good() -> np.ndarray:
    return to_array([add("B", 100, 1, 1), add("A", 101, 2, 2), cancel("B", 100, 1, 1)])


def headers(n: int) -> list[tuple[str, bytes]]:
    return records_headers(dataset="GLBX.MDP3", symbol="X", sent_ns=5, records=n)


def test_a_good_message_decodes() -> None:
    records = good()
    message = decode_records(records.tobytes(), headers(3), KEY)
    assert message.records.tobytes() == records.tobytes()
    assert (message.symbol, message.sent_ns, message.end_of_stream) == ("X", 5, False)
    end = decode_records(b"", end_of_stream_headers(dataset="D", symbol="X", sent_ns=1), KEY)
    assert end.end_of_stream and not len(end.records)


def test_without_a_key_the_first_record_names_the_instrument() -> None:
    records = good()
    records["instrument_id"][2] = 2
    with pytest.raises(MalformedMessage, match=r"record 2: instrument 2 .* \(its first record"):
        decode_records(records.tobytes(), None, None)


def _with(field: str, value: int, index: int = 1) -> bytes:
    records = good()
    records[field][index] = value
    return records.tobytes()


@pytest.mark.parametrize(
    ("key", "value", "hdrs", "reason", "text"),
    [
        (KEY, b"\x01" * 100, None, "length", "100 bytes: not whole 56-byte"),
        (KEY, _with("rtype", 0x01), None, "rtype", "record 1: rtype 0x01"),
        (KEY, _with("length", 16), None, "rtype", "record 1: .* length 16 words"),
        (KEY, _with("action", ord("X")), None, "action", "record 1: action b'X' outside"),
        (KEY, _with("side", 0), None, "side", "record 1: side b'\\\\x00' outside"),
        (b"2", good().tobytes(), None, "key", "record 0: instrument 1 .* instrument 2 \\(its key"),
        (b"abc", good().tobytes(), None, "key", "key b'abc' is not an instrument id"),
        (b"99999999999", good().tobytes(), None, "key", "is not an instrument id"),
        (KEY, good().tobytes(), headers(4), "count", "header records=4 but 3 records"),
        (KEY, good().tobytes(), [("mbo-schema", b"dbn.mbp-1")], "schema", "not a records"),
        (KEY, good().tobytes(), [("dbn-version", b"9")], "version", "DBN versions 1-3"),
        (KEY, good().tobytes(), [("symbol", b"\xff")], "header", "header symbol"),
        (KEY, good().tobytes(), [("end-of-stream", b"1")], "length", "end-of-stream marker with"),
    ],
)
def test_malformed_messages_are_refused_with_a_reason(
    key: bytes, value: bytes, hdrs: list[tuple[str, bytes]] | None, reason: str, text: str
) -> None:
    with pytest.raises(MalformedMessage, match=text) as raised:
        decode_records(value, hdrs, key)
    assert raised.value.reason == reason
    assert reason in MalformedMessage.REASONS
