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


def first_invalid_record(records: np.ndarray) -> tuple[int, str, str] | None:
    """(index, reason, what is wrong) of the first record that is not a plain MBO record with
    DBN's action and side codes; None if all are. Whole-array numpy checks, ~5 ns a record.
    Reasons: "rtype" (rtype or length field), "action", "side"."""
    bad = (records["rtype"] != RTYPE_MBO) | (records["length"] != MBO_LENGTH_WORDS)
    if bad.any():
        i = int(np.argmax(bad))
        rtype, length = records["rtype"][i], records["length"][i]
        detail = (
            f"record {i}: rtype {rtype:#04x}, length {length} words "
            f"(a plain MBO record is rtype {RTYPE_MBO:#04x}, {MBO_LENGTH_WORDS} words)"
        )
        return i, "rtype", detail
    for field, valid, codes in (("action", _VALID_ACTION, ACTIONS), ("side", _VALID_SIDE, SIDES)):
        values = records[field]
        bad = ~valid[values]
        if bad.any():
            i = int(np.argmax(bad))
            return i, field, f"record {i}: {field} {bytes([values[i]])!r} outside {codes.decode()}"
    return None


assert MBO_DTYPE.itemsize == MBO_LENGTH_WORDS * 4, "databento_dbn changed the MBO layout"
