"""Writing genuine DBN v3 MBO files (`.dbn` plain, `.dbn.zst` zstd) from numpy record chunks.

Layout: the DBN metadata block (databento_dbn.Metadata.encode(): dataset, schema mbo, start/end,
stype raw_symbol -> instrument_id, the symbols and their mapping intervals), then the 56-byte
MBO records.

The metadata comes first in the file but its end time (and the mapping intervals' end date) is
known only once the last record is generated. Its encoded size depends only on the symbols, not
on the dates, so the writer puts a placeholder of the final size first, streams the records after
it and at the end overwrites the placeholder in place:

* `.dbn`: the metadata block itself is the placeholder.
* `.dbn.zst`: two zstd frames, decoded back to back as one DBN stream (the zstd format allows any
  number of frames; zstd, databento and mbo_core.dbn read across them). The first holds the
  metadata in raw (stored) blocks, so its size is fixed and it can be rewritten in place; the
  second is the records, compressed by multi-threaded zstd while the generator runs.

Memory stays bounded by one chunk whatever the record count, and the disk holds only the file
being written. It is written under a temporary name next to the target and renamed into place
only when complete, so a file at the target path is never half written; on failure it is removed.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import databento_dbn
import numpy as np
import zstandard
from databento_dbn.metadata import MappingInterval as DbnMappingInterval

from mbo_core.records import MBO_DTYPE

DBN_VERSION = 3
ZSTD_LEVEL = 3
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_RAW_BLOCK = 128 * 1024


@dataclass(slots=True)
class MappingInterval:
    """databento_dbn.MappingInterval protocol: [start_date, end_date) -> symbol."""

    start_date: dt.date
    end_date: dt.date
    symbol: str


@dataclass(slots=True)
class SymbolMapping:
    """databento_dbn.SymbolMapping protocol."""

    raw_symbol: str
    intervals: Sequence[DbnMappingInterval]


def encode_metadata(
    *,
    dataset: str,
    start_ns: int,
    end_ns: int,
    symbols: Sequence[tuple[str, int]],
) -> bytes:
    """DBN v3 metadata of an MBO file over [start_ns, end_ns) whose raw symbols map to instrument
    ids (`symbols`: (raw_symbol, instrument_id)) for every UTC date the range touches."""
    start_date = _utc_date(start_ns)
    end_date = _utc_date(max(start_ns, end_ns - 1)) + dt.timedelta(days=1)
    metadata = databento_dbn.Metadata(
        dataset=dataset,
        start=start_ns,
        stype_in=databento_dbn.SType.from_str("raw_symbol"),
        stype_out=databento_dbn.SType.from_str("instrument_id"),
        schema=databento_dbn.Schema.from_str("mbo"),
        symbols=[raw for raw, _ in symbols],
        partial=[],
        not_found=[],
        mappings=[
            SymbolMapping(raw, [MappingInterval(start_date, end_date, str(instrument_id))])
            for raw, instrument_id in symbols
        ],
        end=end_ns,
        version=DBN_VERSION,
    )
    return bytes(metadata.encode())


def _utc_date(ns: int) -> dt.date:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).date()


def is_compressed_path(path: Path) -> bool:
    """`.dbn.zst` -> True, `.dbn` -> False; ValueError for anything else."""
    name = path.name
    if name.endswith(".dbn.zst"):
        return True
    if name.endswith(".dbn"):
        return False
    raise ValueError(f"{path}: the output name must end in .dbn or .dbn.zst")


def raw_zstd_frame(data: bytes) -> bytes:
    """A zstd frame storing `data` uncompressed (RFC 8878): its size depends only on len(data).

    Header: magic, then a descriptor for a single-segment frame with a 4-byte content size and
    no checksum or dictionary; then raw blocks of at most 128 KiB, the last one flagged.
    """
    out = bytearray(ZSTD_MAGIC)
    out.append(0b1010_0000)  # content-size field of 4 bytes, single segment
    out += len(data).to_bytes(4, "little")
    blocks = [data[i : i + _RAW_BLOCK] for i in range(0, len(data), _RAW_BLOCK)] or [b""]
    for k, block in enumerate(blocks):
        last = k == len(blocks) - 1
        # Block header: bit 0 last block, bits 1-2 type (0 = raw), bits 3-23 size.
        out += (len(block) << 3 | int(last)).to_bytes(3, "little")
        out += block
    return bytes(out)


class DbnWriter:
    """One DBN MBO file, written atomically: `write` record chunks, then `finish` with the final
    metadata (or leave the `with` block by an exception: nothing is left behind)."""

    def __init__(self, path: Path, placeholder_metadata: bytes) -> None:
        self.path = path
        self.compressed = is_compressed_path(path)
        self._metadata_length = len(placeholder_metadata)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self._temp = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "w+b")
        self._zstd: BinaryIO | None = None
        self._file.write(self._head(placeholder_metadata))
        if self.compressed:
            # Multi-threaded zstd works in the background while the generator runs; its output
            # is the same for any worker count >= 1, so files stay byte-identical everywhere.
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
            self._zstd = compressor.stream_writer(self._file, closefd=False)
        self.records = 0

    def __enter__(self) -> DbnWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._file.closed:
            self._file.close()
        self._temp.unlink(missing_ok=True)

    def write(self, records: np.ndarray) -> None:
        if records.dtype != MBO_DTYPE:
            raise TypeError(f"expected MBO_DTYPE records, got {records.dtype}")
        data = np.ascontiguousarray(records).data
        (self._zstd or self._file).write(data)
        self.records += len(records)

    def finish(self, metadata: bytes) -> int:
        """Put the final metadata in place and the file at its path; the file's size."""
        if len(metadata) != self._metadata_length:
            raise ValueError("final metadata must encode to the placeholder's length")
        if self._zstd is not None:
            self._zstd.close()  # ends the records' frame; the file stays open
        self._file.seek(0)
        self._file.write(self._head(metadata))
        self._file.close()
        self._temp.chmod(0o644)
        self._temp.replace(self.path)
        return self.path.stat().st_size

    def _head(self, metadata: bytes) -> bytes:
        return raw_zstd_frame(metadata) if self.compressed else metadata
