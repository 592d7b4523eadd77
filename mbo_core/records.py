"""The DBN MBO record (`MBOMsg`, rtype 0xA0, 56 bytes) as a numpy dtype.

Byte for byte databento_dbn's layout, except that `action` and `side` are read as unsigned bytes
(ord('A') ...) rather than 1-byte strings, so compiled code can branch on them. Any DBN MBO body
can be viewed as this dtype without copying.
"""

from __future__ import annotations

from collections.abc import Sequence

import databento_dbn
import numpy as np

RTYPE_MBO = 0xA0
#: DBN record length in 4-byte words for a plain MBO record (without `ts_out`).
MBO_LENGTH_WORDS = 14


def _mbo_dtype() -> np.dtype:
    fields = [
        (name, "u1" if name in ("action", "side") else kind)
        for name, kind in databento_dbn.MBOMsg._dtypes
    ]
    return np.dtype(fields)


MBO_DTYPE: np.dtype = _mbo_dtype()
#: The records as opaque 56-byte items: numpy copies these 20-30x faster than MBO_DTYPE (fancy
#: indexing, masks and concatenation go field by field on a structured dtype).
_RAW = np.dtype((np.void, MBO_DTYPE.itemsize))


def take_records(records: np.ndarray, index: np.ndarray) -> np.ndarray:
    """records[index] (an index array or a boolean mask) of MBO records, copied as raw bytes."""
    taken: np.ndarray = records.view(_RAW)[index].view(MBO_DTYPE)
    return taken


def join_records(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Structured arrays of one dtype (MBO or any other record layout) joined, copied as raw
    bytes; the array itself when there is one."""
    if len(arrays) == 1:
        return arrays[0]
    dtype = arrays[0].dtype
    raw = np.dtype((np.void, dtype.itemsize))
    joined: np.ndarray = np.concatenate([a.view(raw) for a in arrays]).view(dtype)
    return joined


#: The action and side codes of DBN MBO records (shared/docs/book-rules.md, "The record").
ACTIONS = b"ACFMNRT"
SIDES = b"ABN"


def _lookup(codes: bytes) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(codes)] = True
    return table


_VALID_ACTION = _lookup(ACTIONS)
_VALID_SIDE = _lookup(SIDES)


#: The first two bytes of a plain MBO record (length in words, rtype) as one little-endian u2,
#: and every valid (action, side) pair (bytes 38-39) likewise: two 16-bit columns of the records
#: say whether all are valid, in two numpy passes instead of six over byte fields.
_OFFSETS = {name: int(field[1]) for name, field in (MBO_DTYPE.fields or {}).items()}
_HEAD_WORD = MBO_LENGTH_WORDS | (RTYPE_MBO << 8)
_CODES_WORD = _OFFSETS["action"] // 2
_VALID_CODES = np.zeros(1 << 16, dtype=bool)
_VALID_CODES[[a | (s << 8) for a in ACTIONS for s in SIDES]] = True
assert _OFFSETS["side"] == _OFFSETS["action"] + 1 and _OFFSETS["action"] % 2 == 0
assert _OFFSETS["length"] == 0 and _OFFSETS["rtype"] == 1


def first_invalid_record(records: np.ndarray) -> tuple[int, str, str] | None:
    """(index, reason, what is wrong with that record) of the first record that is not a plain
    MBO record with DBN's action and side codes; None if all are. Reasons: "rtype" (rtype or
    length field), "action", "side". Valid records cost two passes over 16-bit columns (9 µs for
    1,000)."""
    if not len(records):  # e.g. a file's last chunk that held only heartbeats
        return None
    words = np.ascontiguousarray(records).view(np.uint16).reshape(len(records), -1)
    if (words[:, 0] == _HEAD_WORD).all() and _VALID_CODES[words[:, _CODES_WORD]].all():
        return None
    return _describe_invalid(records)


def _describe_invalid(records: np.ndarray) -> tuple[int, str, str] | None:
    bad = (records["rtype"] != RTYPE_MBO) | (records["length"] != MBO_LENGTH_WORDS)
    if bad.any():
        i = int(np.argmax(bad))
        rtype, length = records["rtype"][i], records["length"][i]
        detail = (
            f"rtype {rtype:#04x}, length {length} words "
            f"(a plain MBO record is rtype {RTYPE_MBO:#04x}, {MBO_LENGTH_WORDS} words)"
        )
        return i, "rtype", detail
    for field, valid, codes in (("action", _VALID_ACTION, ACTIONS), ("side", _VALID_SIDE, SIDES)):
        values = records[field]
        bad = ~valid[values]
        if bad.any():
            i = int(np.argmax(bad))
            return i, field, f"{field} {bytes([values[i]])!r} outside {codes.decode()}"
    return None


assert MBO_DTYPE.itemsize == MBO_LENGTH_WORDS * 4, "databento_dbn changed the MBO layout"
