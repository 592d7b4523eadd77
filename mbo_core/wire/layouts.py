"""Fixed-width little-endian layouts of the topics' values, as numpy dtypes.

`MBP1_DTYPE` and `MBP10_DTYPE` are byte for byte DBN's `MBP1Msg` (rtype 0x01, 80 bytes) and
`MBP10Msg` (rtype 0x0A, 368 bytes) of DBN versions 1-3, read from databento_dbn's own field list,
except that `action` and `side` are unsigned bytes (ord('A') ...) and the levels are one
sub-array field `levels` of `LEVEL_DTYPE` (DBN's `BidAskPair`: bid_px, ask_px, bid_sz, ask_sz,
bid_ct, ask_ct) instead of the flat bid_px_00 ... ask_ct_09, so code reads a column of levels at
once. The bytes are the same: `databento_dbn.DBNDecoder(has_metadata=False)` reads a message
value, and `np.frombuffer(value, np.dtype(databento_dbn.MBP10Msg._dtypes))` reads it with the
flat names.

`EXT_DTYPE` (72 bytes, this project's, version `EXT_SCHEMA`) carries per row what DBN's records
have no field for; a message's ext rows travel in its `ext` header, one per value record, in the
same order::

    offset size field
    0      4    record_index  u32  index of the F_LAST record in the source records message
                                   (0 for a final snapshot)
    4      1    flags         u8   EXT_CONSOLIDATED 1: the instrument's consolidated book across
                                   publishers (the DBN publisher_id is 0, its sequence 0 and
                                   meaningless); EXT_CROSSED 2: best bid > best ask;
                                   EXT_LOCKED 4: best bid == best ask; EXT_FINAL 8: the book's
                                   last state at the end of its stream (snapshots only)
    5      3    reserved           zero
    8      64   quality       u64[8] the book's data-quality counters so far, in
                                   mbo_core.quality.QUALITY_FIELDS order
"""

from __future__ import annotations

import databento_dbn
import numpy as np

from mbo_core.quality import QUALITY_FIELDS

RTYPE_MBP_1 = 0x01
RTYPE_MBP_10 = 0x0A
#: DBN's RecordHeader.length for each: the record's size in 4-byte words.
MBP1_LENGTH_WORDS = 20
MBP10_LENGTH_WORDS = 92

LEVEL_DTYPE = np.dtype(
    [
        ("bid_px", "<i8"),
        ("ask_px", "<i8"),
        ("bid_sz", "<u4"),
        ("ask_sz", "<u4"),
        ("bid_ct", "<u4"),
        ("ask_ct", "<u4"),
    ]
)
#: Level sizes and counts are u32 in DBN: a total above this saturates (no venue comes near).
LEVEL_SIZE_MAX = int(np.iinfo(np.uint32).max)


def _head_fields() -> list[tuple[str, str]]:
    """The DBN MBP header and body fields before the levels (equal in MBP-1 and MBP-10)."""
    fields: list[tuple[str, str]] = []
    for name, kind in databento_dbn.MBP1Msg._dtypes:
        if name.startswith(("bid_", "ask_")):
            break
        fields.append((name, "u1" if name in ("action", "side") else "<" + kind.lstrip("<=")))
    return fields


MBP1_DTYPE = np.dtype([*_head_fields(), ("levels", LEVEL_DTYPE, (1,))])
MBP10_DTYPE = np.dtype([*_head_fields(), ("levels", LEVEL_DTYPE, (10,))])
MBP10_DEPTH = 10

EXT_SCHEMA = "mbo.ext/1"
EXT_CONSOLIDATED = 1
EXT_CROSSED = 2
EXT_LOCKED = 4
EXT_FINAL = 8
EXT_DTYPE = np.dtype(
    [
        ("record_index", "<u4"),
        ("flags", "u1"),
        ("reserved", "V3"),
        ("quality", "<u8", (len(QUALITY_FIELDS),)),
    ]
)

assert (
    MBP1_DTYPE.itemsize == MBP1_LENGTH_WORDS * 4 == np.dtype(databento_dbn.MBP1Msg._dtypes).itemsize
)
assert (
    MBP10_DTYPE.itemsize
    == MBP10_LENGTH_WORDS * 4
    == np.dtype(databento_dbn.MBP10Msg._dtypes).itemsize
)
assert EXT_DTYPE.itemsize == 72
