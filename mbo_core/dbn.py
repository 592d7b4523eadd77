"""Reading Databento DBN MBO files (`.dbn`, `.dbn.zst`) as numpy batches of `MBO_DTYPE`.

Plain 56-byte MBO bodies are viewed in place (np.frombuffer over the file's bytes, no per-record
work). Anything else, such as files written with `ts_out` (longer records) or mixed-schema
files, falls back to databento_dbn's record decoder and keeps the MBO records.

Every problem with the input (missing, not DBN, another schema, truncated, corrupt) raises
`InputError` with a one-line message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import databento_dbn
import numpy as np
import zstandard

from mbo_core.errors import InputError
from mbo_core.records import MBO_DTYPE, MBO_LENGTH_WORDS, RTYPE_MBO, first_invalid_record

DBN_MAGIC = b"DBN"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_PREAMBLE = 8  # "DBN", version byte, u32 little-endian metadata length
DEFAULT_BATCH_RECORDS = 1 << 18

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class MboFile:
    """An opened, validated DBN MBO file. Iterate `batches()` for its records."""

    path: Path
    metadata: databento_dbn.Metadata
    compressed: bool
    body_offset: int  # in the decompressed stream
    file_size: int
    symbols: dict[int, str] = field(default_factory=dict)  # instrument_id -> raw symbol

    @property
    def version(self) -> int:
        return int(self.metadata.version)

    @property
    def dataset(self) -> str:
        return str(self.metadata.dataset)

    @property
    def zero_copy(self) -> bool:
        """Whether records can be viewed in place (plain MBO records, no ts_out)."""
        return not self.metadata.ts_out and self.metadata.schema == databento_dbn.Schema.MBO

    @property
    def record_count(self) -> int | None:
        """Records in the file, when known without reading it (plain, uncompressed, zero-copy)."""
        if self.compressed or not self.zero_copy:
            return None
        return (self.file_size - self.body_offset) // MBO_DTYPE.itemsize

    def batches(
        self,
        batch_records: int = DEFAULT_BATCH_RECORDS,
        progress: ProgressCallback | None = None,
    ) -> Iterator[np.ndarray]:
        """Yield the MBO records in file order, in arrays of at most `batch_records`.

        `progress(n)` is called with the number of file bytes consumed since the last call.
        Raises InputError if the file turns out truncated or corrupt.
        """
        with _open_stream(self.path, self.compressed) as (stream, consumed):
            metadata = _read_exact(stream, self.body_offset, self.path)
            decoder = None if self.zero_copy else _decoder_after(metadata)
            reported = consumed()
            if progress:
                progress(reported)
            seen = 0  # records yielded so far
            for chunk in _body_chunks(stream, batch_records * MBO_DTYPE.itemsize, self.path):
                if progress:
                    now = consumed()
                    progress(now - reported)
                    reported = now
                records = None if decoder else _view_mbo(chunk, seen, self.path)
                if records is None:
                    # Not a plain MBO body (from here on): decode record by record.
                    decoder = decoder or _decoder_after(metadata)
                    records = _decode_records(decoder, chunk, self.path, self.symbols)
                    _check_codes(records, seen, self.path)
                if len(records):
                    seen += len(records)
                    yield records
            if decoder is not None and decoder.buffer():
                raise InputError(f"{self.path}: truncated: the last record is cut off")
            read = consumed()
            if read != self.file_size:
                # Cut (or grown) since it was opened and checked: its end is not the one seen.
                raise InputError(
                    f"{self.path}: changed while being read: {read:,} bytes read, "
                    f"{self.file_size:,} when it was opened"
                )


def open_mbo(path: Path | str) -> MboFile:
    """Open and validate a DBN file of schema MBO; raises InputError when it is not one."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    compressed = head == ZSTD_MAGIC
    with _open_stream(path, compressed) as (stream, _):
        preamble = stream.read(_PREAMBLE)
        if preamble[:3] != DBN_MAGIC:
            kind = "zstd data" if compressed else "file"
            raise InputError(f"{path}: not a DBN file ({kind} does not start with 'DBN')")
        if len(preamble) < _PREAMBLE:
            raise InputError(f"{path}: truncated DBN metadata")
        (meta_len,) = struct.unpack("<I", preamble[4:8])
        meta_bytes = preamble + _read_exact(stream, meta_len, path)
    try:
        metadata = databento_dbn.Metadata.decode(meta_bytes)
    except Exception as exc:  # databento_dbn raises a bare ValueError/RuntimeError with details
        raise InputError(f"{path}: unreadable DBN metadata ({_one_line(exc)})") from exc
    if metadata.schema is not None and metadata.schema != databento_dbn.Schema.MBO:
        raise InputError(f"{path}: DBN schema is {metadata.schema}, expected mbo")
    return MboFile(
        path=path,
        metadata=metadata,
        compressed=compressed,
        body_offset=_PREAMBLE + meta_len,
        file_size=path.stat().st_size,
        symbols=instrument_symbols(metadata),
    )


def instrument_symbols(metadata: databento_dbn.Metadata) -> dict[int, str]:
    """instrument_id -> raw symbol, from the metadata's symbology mappings.

    Handles both directions Databento writes: raw_symbol -> instrument_id (historical files) and
    instrument_id -> raw_symbol. Where an id maps to several symbols over time, the last wins.
    """
    symbols: dict[int, str] = {}
    for source, intervals in (metadata.mappings or {}).items():
        for interval in intervals:
            target = str(interval["symbol"])
            if target.isdigit():
                symbols[int(target)] = str(source)
            elif str(source).isdigit():
                symbols[int(source)] = target
    return symbols


class _StreamContext:
    """Opens the file, decompressing zstd on the fly; yields (stream, bytes-consumed probe)."""

    def __init__(self, path: Path, compressed: bool) -> None:
        self._path = path
        self._compressed = compressed
        self._raw: BinaryIO | None = None
        self._stream: BinaryIO | None = None

    def __enter__(self) -> tuple[BinaryIO, Callable[[], int]]:
        raw = self._path.open("rb")
        self._raw = raw
        if self._compressed:
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            self._stream = reader
            return reader, raw.tell
        return raw, raw.tell

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._raw is not None:
            self._raw.close()


def _open_stream(path: Path, compressed: bool) -> _StreamContext:
    return _StreamContext(path, compressed)


def _read_exact(stream: BinaryIO, n: int, path: Path) -> bytes:
    parts: list[bytes] = []
    remaining = n
    while remaining > 0:
        part = _read(stream, remaining, path)
        if not part:
            raise InputError(f"{path}: truncated DBN metadata")
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _read(stream: BinaryIO, n: int, path: Path) -> bytes:
    try:
        return stream.read(n)
    except zstandard.ZstdError as exc:
        raise InputError(f"{path}: corrupt zstd data ({_one_line(exc)})") from exc


def _body_chunks(stream: BinaryIO, chunk_bytes: int, path: Path) -> Iterator[bytes]:
    """The record body in chunks of whole 56-byte units (the last chunk holds any remainder)."""
    pending = b""
    while True:
        data = _read(stream, chunk_bytes - len(pending), path)
        if not data:
            break
        buf = pending + data if pending else data
        whole = len(buf) - len(buf) % MBO_DTYPE.itemsize
        if whole:
            yield buf[:whole]
        pending = buf[whole:]
    if pending:
        yield pending


def _view_mbo(chunk: bytes, seen: int, path: Path) -> np.ndarray | None:
    """The chunk as MBO records in place, or None if it holds anything but plain MBO records
    (the decoder reads those); InputError for records with codes no MBO record has."""
    if len(chunk) % MBO_DTYPE.itemsize:
        if chunk[1:2] != bytes([RTYPE_MBO]):
            return None
        raise InputError(
            f"{path}: truncated: the last record is cut off "
            f"({len(chunk) % MBO_DTYPE.itemsize} of {MBO_DTYPE.itemsize} bytes)"
        )
    records = np.frombuffer(chunk, dtype=MBO_DTYPE)
    invalid = first_invalid_record(records)
    if invalid is not None and invalid[1] == "rtype":
        return None
    _refuse_invalid(invalid, seen, path)
    return records


def _check_codes(records: np.ndarray, seen: int, path: Path) -> None:
    """InputError naming the first decoded record that cannot be an MBO record."""
    _refuse_invalid(first_invalid_record(records), seen, path)


def _refuse_invalid(invalid: tuple[int, str, str] | None, seen: int, path: Path) -> None:
    # zstd data corrupted in a frame without a checksum decompresses to such garbage (and the
    # pipeline would refuse it): the first bad record is named, counted from the body's start.
    if invalid is not None:
        index, _, detail = invalid
        raise InputError(f"{path}: corrupt: record {seen + index:,} of the file: {detail}")


def _decoder_after(metadata: bytes) -> databento_dbn.DBNDecoder:
    decoder = databento_dbn.DBNDecoder()
    decoder.write(metadata)
    decoder.decode()  # consumes the metadata; records follow
    return decoder


def _decode_records(
    decoder: databento_dbn.DBNDecoder, chunk: bytes, path: Path, symbols: dict[int, str]
) -> np.ndarray:
    """The chunk's MBO records; its symbol-mapping records (a Live stream's, a recorded one's)
    go into `symbols`, which readers of the file see as they stream (the `symbol` header)."""
    try:
        decoder.write(chunk)
        decoded = decoder.decode()
    except Exception as exc:  # databento_dbn raises bare ValueError/RuntimeError with details
        raise InputError(f"{path}: corrupt DBN records ({_one_line(exc)})") from exc
    mbo = []
    for rec in decoded:
        if isinstance(rec, databento_dbn.MBOMsg):
            mbo.append(bytes(rec)[: MBO_DTYPE.itemsize])
        elif isinstance(rec, databento_dbn.SymbolMappingMsg):
            symbols[int(rec.instrument_id)] = str(rec.stype_out_symbol)
    records = np.frombuffer(b"".join(mbo), dtype=MBO_DTYPE).copy()
    records["length"] = MBO_LENGTH_WORDS  # without the ts_out suffix we dropped
    return records


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
