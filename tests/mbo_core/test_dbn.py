"""Reading DBN files: the zero-copy path, the decoder fallback, and every kind of bad input."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import databento as db
import databento_dbn
import numpy as np
import pytest
import zstandard

from mbo_core.dbn import open_mbo
from mbo_core.errors import InputError
from mbo_core.records import MBO_DTYPE
from tests.paths import CLX5


def clx5_parts() -> tuple[bytes, bytes]:
    raw = CLX5.read_bytes()
    meta_len = 8 + struct.unpack("<I", raw[4:8])[0]
    return raw[:meta_len], raw[meta_len:]


def read_all(path: Path, batch_records: int = 1 << 18) -> np.ndarray:
    return np.concatenate(list(open_mbo(path).batches(batch_records)))


def metadata(schema: str = "mbo", ts_out: bool = False) -> bytes:
    encoded: bytes = databento_dbn.Metadata(
        dataset="GLBX.MDP3",
        start=1758742200000000000,
        stype_in=databento_dbn.SType("raw_symbol"),
        stype_out=databento_dbn.SType("instrument_id"),
        schema=databento_dbn.Schema(schema),
        symbols=["CLX5"],
        ts_out=ts_out,
    ).encode()
    return encoded


@pytest.fixture(scope="module")
def clx5_records() -> np.ndarray:
    return read_all(CLX5)


def test_plain_file_is_viewed_in_place(clx5_records: np.ndarray) -> None:
    source = open_mbo(CLX5)
    assert source.zero_copy and not source.compressed
    assert source.record_count == len(clx5_records) == 38_212
    assert source.version == 3 and source.dataset == "GLBX.MDP3"
    assert source.symbols == {432669: "CLX5"}
    # Same records as databento's own decoder, field by field.
    expected = db.DBNStore.from_file(CLX5).to_ndarray()
    assert clx5_records.tobytes() == expected.tobytes()


def test_small_batches_concatenate_to_the_whole(clx5_records: np.ndarray) -> None:
    batches = list(open_mbo(CLX5).batches(batch_records=1000))
    assert max(len(b) for b in batches) <= 1000
    assert np.concatenate(batches).tobytes() == clx5_records.tobytes()


def test_progress_reports_every_byte() -> None:
    seen: list[int] = []
    list(open_mbo(CLX5).batches(batch_records=5000, progress=seen.append))
    assert sum(seen) == CLX5.stat().st_size


def test_zstd_file_reads_the_same(tmp_path: Path, clx5_records: np.ndarray) -> None:
    path = tmp_path / "clx5.dbn.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(CLX5.read_bytes()))
    source = open_mbo(path)
    assert source.compressed and source.record_count is None
    assert read_all(path, batch_records=7000).tobytes() == clx5_records.tobytes()


def test_ts_out_records_fall_back_to_the_decoder(tmp_path: Path) -> None:
    _, body = clx5_parts()
    records = np.frombuffer(body, dtype=MBO_DTYPE)[:500].copy()
    records["length"] = 16  # 56 + 8 bytes of ts_out, in 4-byte words
    ts_out = np.arange(500, dtype="<u8") + 10**18
    with_ts_out = b"".join(r.tobytes() + t.tobytes() for r, t in zip(records, ts_out, strict=True))
    path = tmp_path / "ts_out.dbn"
    path.write_bytes(metadata(ts_out=True) + with_ts_out)
    source = open_mbo(path)
    assert not source.zero_copy
    got = read_all(path, batch_records=64)
    records["length"] = 14
    assert got.tobytes() == records.tobytes()


def test_other_record_types_are_skipped(tmp_path: Path) -> None:
    _, body = clx5_parts()
    system = bytes(databento_dbn.SystemMsg(ts_event=1, msg="heartbeat"))
    path = tmp_path / "mixed.dbn"
    path.write_bytes(metadata() + body[: 56 * 10] + system + body[56 * 10 : 56 * 20])
    got = read_all(path)
    assert got.tobytes() == body[: 56 * 20]


# ------------------------------------------------------------------ bad input


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_mbo(tmp_path / "nope.dbn")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a regular file"):
        open_mbo(tmp_path)


def test_not_dbn(tmp_path: Path) -> None:
    path = tmp_path / "x.dbn"
    path.write_text("ts_event,price\n1,2\n")
    with pytest.raises(InputError, match="not a DBN file"):
        open_mbo(path)


def test_zstd_of_something_else(tmp_path: Path) -> None:
    path = tmp_path / "x.dbn.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"hello world, not dbn"))
    with pytest.raises(InputError, match="not a DBN file"):
        open_mbo(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.dbn"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="not a DBN file"):
        open_mbo(path)


def test_truncated_metadata(tmp_path: Path) -> None:
    path = tmp_path / "t.dbn"
    path.write_bytes(CLX5.read_bytes()[:40])
    with pytest.raises(InputError, match="truncated DBN metadata"):
        open_mbo(path)


def test_truncated_mid_record(tmp_path: Path) -> None:
    path = tmp_path / "t.dbn"
    path.write_bytes(CLX5.read_bytes()[:-20])
    source = open_mbo(path)  # the metadata is fine; the cut shows at the end of the body
    with pytest.raises(InputError, match="truncated: the last record is cut off"):
        list(source.batches())


def test_truncated_zstd_stream(tmp_path: Path) -> None:
    path = tmp_path / "t.dbn.zst"
    data = zstandard.ZstdCompressor().compress(CLX5.read_bytes())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"truncated|corrupt"):
        list(open_mbo(path).batches())


def test_other_schema(tmp_path: Path) -> None:
    path = tmp_path / "mbp.dbn"
    path.write_bytes(metadata(schema="mbp-1"))
    with pytest.raises(InputError, match="schema is mbp-1, expected mbo"):
        open_mbo(path)


def test_a_corrupt_zstd_frame_with_a_checksum_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.dbn.zst"
    data = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(CLX5.read_bytes()))
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt zstd data"):
        list(open_mbo(path).batches())


def test_garbage_records_are_refused_naming_the_first(tmp_path: Path) -> None:
    """zstd data corrupted in a frame without a checksum decompresses to garbage records: the
    first record with a code no MBO record has is named, counted from the start of the body."""
    meta, body = clx5_parts()
    records = np.frombuffer(body, dtype=MBO_DTYPE).copy()
    records["action"][12_345] = 0x9F
    path = tmp_path / "g.dbn"
    path.write_bytes(meta + records.tobytes())
    with pytest.raises(InputError, match=r"corrupt: record 12,345 of the file: action b'\\x9f'"):
        list(open_mbo(path).batches(1000))
    records["action"][12_345] = ord("A")
    records["side"][20_000] = ord("x")
    path.write_bytes(meta + records.tobytes())
    with pytest.raises(InputError, match=r"record 20,000 of the file: side b'x' outside ABN"):
        list(open_mbo(path).batches())


def test_symbol_mappings_in_the_body_name_instruments_and_a_heartbeat_at_the_end_is_fine(
    tmp_path: Path,
) -> None:
    """A recorded Live stream: metadata without mappings, its symbol in a SymbolMappingMsg. The
    records fill the first 1,000-record chunk exactly, so the last chunk holds no MBO record
    (the mapping and a heartbeat)."""
    records = np.concatenate(list(open_mbo(CLX5).batches()))[:1000]
    dbn: Any = databento_dbn  # (its stubs type the enums' members as str and int)
    metadata = dbn.Metadata(
        dataset="GLBX.MDP3", schema=dbn.Schema.MBO, start=0,
        stype_in=dbn.SType.RAW_SYMBOL, stype_out=dbn.SType.INSTRUMENT_ID,
        symbols=["CLX5"], partial=[], not_found=[], mappings=[], end=None, limit=None,
        ts_out=False, version=3,
    )  # fmt: skip
    mapping = dbn.SymbolMappingMsg(
        publisher_id=1, instrument_id=432669, ts_event=0,
        stype_in=dbn.SType.RAW_SYMBOL, stype_in_symbol="CLX5",
        stype_out=dbn.SType.RAW_SYMBOL, stype_out_symbol="CLX5", start_ts=0, end_ts=0,
    )  # fmt: skip
    heartbeat = dbn.SystemMsg(ts_event=0, msg="Heartbeat", code=dbn.SystemCode.HEARTBEAT)
    path = tmp_path / "session.dbn"
    path.write_bytes(metadata.encode() + records.tobytes() + bytes(mapping) + bytes(heartbeat))
    source = open_mbo(path)
    read = np.concatenate(list(source.batches(batch_records=1000)))
    assert read.tobytes() == records.tobytes()
    assert source.symbols == {432669: "CLX5"}
