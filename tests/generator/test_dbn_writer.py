"""Generated files are genuine DBN v3: databento reads them back, metadata and all."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import databento
import databento_dbn
import numpy as np
import pytest
import zstandard

from generator.api import generate_file, generate_records
from generator.core import GeneratorConfig
from generator.dbn_writer import DbnWriter, encode_metadata, is_compressed_path, raw_zstd_frame
from mbo_core.records import MBO_DTYPE

START = 1_736_173_800_000_000_000  # 2025-01-06 14:30 UTC
CONFIG = GeneratorConfig(instruments=3, publishers=2, records=40_000, seed=21, start_ns=START)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dbn")
    paths = {"zst": folder / "three.dbn.zst", "plain": folder / "three.dbn"}
    for path in paths.values():
        generate_file(path, CONFIG)
    return paths


def test_databento_reads_metadata_symbols_and_mappings(written: dict[str, Path]) -> None:
    records = np.concatenate(list(generate_records(CONFIG)))
    for path in written.values():
        store = databento.DBNStore.from_file(path)
        metadata = store.metadata
        assert metadata.version == 3
        assert store.dataset == "SYNTH.MDP3"
        assert store.schema == databento_dbn.Schema.from_str("mbo")
        assert store.stype_in == databento_dbn.SType.from_str("raw_symbol")
        assert store.stype_out == databento_dbn.SType.from_str("instrument_id")
        assert metadata.start == START
        assert metadata.end == int(records["ts_recv"].max()) + 1
        assert store.symbols == ["XAAF6", "XAAG6", "XAAH6"]
        first_day = dt.date(2025, 1, 6)
        last_day = dt.datetime.fromtimestamp(int(records["ts_recv"].max()) / 1e9, tz=dt.UTC).date()
        for symbol, instrument_id in (("XAAF6", 100001), ("XAAG6", 100002), ("XAAH6", 100003)):
            (interval,) = store.mappings[symbol]
            assert interval["symbol"] == str(instrument_id)
            assert interval["start_date"] == first_day
            assert interval["end_date"] == last_day + dt.timedelta(days=1)


def test_databento_reads_every_record_unchanged(written: dict[str, Path]) -> None:
    records = np.concatenate(list(generate_records(CONFIG)))
    for path in written.values():
        store = databento.DBNStore.from_file(path)
        array = store.to_ndarray()
        assert array.dtype == np.dtype(databento_dbn.MBOMsg._dtypes)
        assert array.view(MBO_DTYPE).tobytes() == records.tobytes()
        frame = store.to_df()
        assert len(frame) == CONFIG.records
        assert frame["symbol"].notna().all()  # every record's date is inside the mappings
        assert set(frame["symbol"]) == {"XAAF6", "XAAG6", "XAAH6"}
        assert set(frame["action"]) == {"A", "C", "M", "T", "F"} | (
            {"R"} if (records["action"] == ord("R")).any() else set()
        )


def test_zst_is_the_plain_file_in_a_metadata_frame_and_a_records_frame(
    written: dict[str, Path],
) -> None:
    plain = written["plain"].read_bytes()
    packed = written["zst"].read_bytes()
    metadata_length = 8 + int.from_bytes(plain[4:8], "little")
    head = raw_zstd_frame(plain[:metadata_length])
    assert packed.startswith(head)  # the metadata, stored
    records = zstandard.ZstdDecompressor().decompress(
        packed[len(head) :], max_output_size=len(plain)
    )
    assert records == plain[metadata_length:]
    reader = zstandard.ZstdDecompressor().stream_reader(packed, read_across_frames=True)
    assert reader.read() == plain
    assert len(packed) < len(plain) / 2
    assert sorted(p.name for p in written["zst"].parent.iterdir()) == [
        "three.dbn",
        "three.dbn.zst",
    ]  # no temporary files left


@pytest.mark.parametrize("size", [0, 1, 131_071, 131_072, 131_073, 400_000])
def test_raw_frames_store_data_of_any_size(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = raw_zstd_frame(data)
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    assert len(frame) == 9 + len(data) + 3 * max(1, -(-size // 131_072))


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "broken.dbn.zst"
    metadata = encode_metadata(dataset="SYNTH.MDP3", start_ns=START, end_ns=START + 1, symbols=[])
    with pytest.raises(RuntimeError, match="boom"), DbnWriter(path, metadata) as writer:
        writer.write(np.zeros(10, dtype=MBO_DTYPE))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_final_metadata_must_keep_the_placeholder_length(tmp_path: Path) -> None:
    one = [("XAAF6", 100001)]
    placeholder = encode_metadata(
        dataset="SYNTH.MDP3", start_ns=START, end_ns=START + 1, symbols=one
    )
    final = encode_metadata(
        dataset="SYNTH.MDP3", start_ns=START, end_ns=START + 10**15, symbols=one
    )
    assert len(final) == len(placeholder)  # dates and times do not change the size
    longer = encode_metadata(
        dataset="SYNTH.MDP3", start_ns=START, end_ns=START + 1, symbols=[*one, ("XAAG6", 100002)]
    )
    with DbnWriter(tmp_path / "x.dbn", placeholder) as writer, pytest.raises(ValueError):
        writer.finish(longer)
    assert list(tmp_path.iterdir()) == []


def test_output_names() -> None:
    assert is_compressed_path(Path("a/b.dbn.zst"))
    assert not is_compressed_path(Path("b.dbn"))
    with pytest.raises(ValueError, match=r"\.dbn or \.dbn\.zst"):
        is_compressed_path(Path("b.zst"))
