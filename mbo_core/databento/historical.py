"""Databento's Historical API for MBO data: quote a request, download it once, keep it.

A request (`RangeRequest`) is a dataset, symbols in one symbology, a [start, end) range and the
schema (mbo). `fetch()`:

1. looks it up in the cache (`DownloadCache`, keyed by the request's fields): a hit costs
   nothing and needs neither a key nor the network;
2. otherwise asks `metadata.get_cost` for the price, and refuses a request above the cost limit
   (CostLimitError) unless it was confirmed;
3. streams `timeseries.get_range` into a part file, byte for byte as the gateway sent it (zstd
   DBN: the client always asks for it), checks that it is a whole DBN MBO file of the dataset,
   and moves it into the cache, read-only, beside a JSON sidecar saying what it holds.

The official `databento` client does the HTTP (requests, HTTPS, basic auth with the key); it is
imported only when a request goes out, since it loads pandas (~0.5 s). Its errors become one
line (`DatabentoError`) with the gateway's status, case and message; the key is never part of a
message, a log line or a cache file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, get_args

from mbo_core.dbn import open_mbo
from mbo_core.errors import InputError, MboError

if TYPE_CHECKING:
    import databento

SType = Literal["raw_symbol", "parent", "continuous"]
STYPES: Final[tuple[SType, ...]] = get_args(SType)
SCHEMA: Final = "mbo"
STYPE_OUT: Final = "instrument_id"
#: Version of the cache's layout and sidecar; entries of another version are not used.
CACHE_FORMAT: Final = 1
KEY_HINT: Final = "set DATABENTO_API_KEY or MBO_DATABENTO__API_KEY (environment or secret file)"

#: Told each line worth showing a person (the cost, the gateway's warnings, waiting for a lock).
Notice = Callable[[str], None]
#: Called with the bytes downloaded since the last call.
Progress = Callable[[int], None]
T = TypeVar("T")

_DATASET = re.compile(r"[A-Z0-9]+(?:[._-][A-Z0-9]+)*")


def _selection(request: RangeRequest) -> dict[str, Any]:
    """The arguments that say what data a request is, as the client's calls take them (the
    quote and the download of one request name the same data)."""
    return {
        "dataset": request.dataset,
        "start": request.start,
        "end": request.end,
        "symbols": list(request.symbols),
        "schema": request.schema,
        "stype_in": request.stype_in,
    }


def checked_selection(
    dataset: str, symbols: str | Sequence[str], stype_in: str
) -> tuple[str, tuple[str, ...], SType]:
    """(dataset code, symbols sorted without duplicates, symbology) of a Historical or Live
    request, or InputError naming the argument that is wrong."""
    code = dataset.strip().upper()
    if not _DATASET.fullmatch(code):
        raise InputError(f"dataset {dataset!r}: expected a dataset code such as GLBX.MDP3")
    given = [symbols] if isinstance(symbols, str) else list(symbols)
    names = sorted({part.strip() for text in given for part in text.split(",")} - {""})
    if not names:
        raise InputError("symbols: give at least one, e.g. CLX5 or CL.FUT")
    if stype_in not in STYPES:
        raise InputError(f"stype_in {stype_in!r}: expected one of {', '.join(STYPES)}")
    return code, tuple(names), stype_in


_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?:\.(?P<frac>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_WATCH_EVERY_S: Final = 0.1


class DatabentoError(MboError):
    """The gateway refused a request, or could not be reached, or sent something unusable."""


class CostLimitError(MboError):
    """A request costs more than the limit, and nobody confirmed it."""


def parse_time(text: str, name: str) -> int:
    """UNIX nanoseconds of an ISO 8601 time (UTC unless it carries an offset; a date alone is
    its midnight; up to nanoseconds) or of an integer count of nanoseconds."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    match = _ISO.fullmatch(value)
    if match is None:
        raise InputError(
            f"{name} {text!r}: expected an ISO 8601 time (2025-09-24, 2025-09-24T13:30, with Z "
            "or an offset such as +01:00; UTC if none) or UNIX nanoseconds"
        )
    tz = match["tz"] or "Z"
    tz = "+00:00" if tz == "Z" else tz if ":" in tz else f"{tz[:3]}:{tz[3:]}"
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{match['time'] or '00:00'}{tz}")
    except ValueError as exc:
        raise InputError(f"{name} {text!r}: {exc}") from None
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((match["frac"] or "").ljust(9, "0"))


def format_time(ns: int) -> str:
    """2025-09-24T13:30:00Z (with the fraction of a second, if any)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def usd(value: float) -> str:
    """$12.34, or four decimals below a dollar ($0.0412): Databento quotes fractions of cents."""
    return f"${value:,.2f}" if value >= 1 or value == 0 else f"${value:.4f}"


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """One `timeseries.get_range` request, normalised: the same data asked for twice, however
    written (symbol order, dataset case, time format), is the same request and cache entry."""

    dataset: str
    symbols: tuple[str, ...]  # sorted, without duplicates
    stype_in: SType
    start: int  # UNIX ns, inclusive
    end: int  # UNIX ns, exclusive
    schema: str = SCHEMA
    stype_out: str = STYPE_OUT

    @classmethod
    def of(
        cls, dataset: str, symbols: str | Sequence[str], stype_in: str, start: str, end: str
    ) -> RangeRequest:
        """The request, or InputError naming what is wrong with an argument."""
        code, names, stype = checked_selection(dataset, symbols, stype_in)
        first, last = parse_time(start, "start"), parse_time(end, "end")
        if last <= first:
            raise InputError(f"end {format_time(last)} is not after start {format_time(first)}")
        return cls(code, names, stype, first, last)

    def identity(self) -> dict[str, Any]:
        """What the cache key is made of, as written into the sidecar."""
        return {
            "dataset": self.dataset,
            "schema": self.schema,
            "symbols": list(self.symbols),
            "stype_in": self.stype_in,
            "stype_out": self.stype_out,
            "start": self.start,
            "end": self.end,
        }

    @property
    def key(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def describe(self) -> str:
        shown = ",".join(self.symbols[:5])
        if len(self.symbols) > 5:
            shown += f",... ({len(self.symbols)} symbols)"
        return (
            f"{self.dataset} {self.schema} {shown} ({self.stype_in}) "
            f"{format_time(self.start)} to {format_time(self.end)}"
        )


@dataclass(frozen=True, slots=True)
class CachedFile:
    """A downloaded request in the cache: the DBN file (zstd, as the gateway sent it)."""

    path: Path
    size: int
    records: int
    cost_usd: float | None
    fetched_at: str


@dataclass(frozen=True, slots=True)
class Fetched:
    file: CachedFile
    from_cache: bool


class DownloadCache:
    """`<root>/<dataset>/<schema>-<key>.dbn.zst` and its sidecar `<schema>-<key>.json`.

    The sidecar is written last, so an entry without one (a crash between the two) is not an
    entry. Files are read-only: they are paid for, and `mbo fetch -o` hard-links them.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def data_path(self, request: RangeRequest) -> Path:
        return self.root / request.dataset / f"{request.schema}-{request.key}.dbn.zst"

    def info_path(self, request: RangeRequest) -> Path:
        return self.root / request.dataset / f"{request.schema}-{request.key}.json"

    def part_path(self, request: RangeRequest) -> Path:
        data = self.data_path(request)
        return data.with_name(f".{data.name}.{os.getpid()}.part")

    def lookup(self, request: RangeRequest, notice: Notice) -> CachedFile | None:
        info_path, data = self.info_path(request), self.data_path(request)
        try:
            info = json.loads(info_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            notice(f"cache entry {info_path} is unreadable ({exc}); fetching again")
            return None
        try:
            size = data.stat().st_size
        except FileNotFoundError:
            size = -1
        if (
            not isinstance(info, dict)
            or info.get("format") != CACHE_FORMAT
            or info.get("request") != request.identity()
            or size != info.get("bytes")
        ):
            notice(f"cache entry {data} is missing or damaged; fetching again")
            return None
        return CachedFile(
            path=data,
            size=size,
            records=int(info["records"]),
            cost_usd=info.get("cost_usd"),
            fetched_at=str(info.get("fetched_at")),
        )

    @contextlib.contextmanager
    def held(self, request: RangeRequest, notice: Notice) -> Iterator[None]:
        """Holds the request's lock: two `mbo fetch` of one request download it once."""
        directory = self.data_path(request).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(
                directory / f".{request.schema}-{request.key}.lock", os.O_RDWR | os.O_CREAT
            )
        except OSError as exc:
            raise InputError(f"{directory}: cannot use the download cache: {exc}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                notice("waiting for another fetch of the same request to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def store(
        self, request: RangeRequest, part: Path, *, cost_usd: float, records: int, gateway: str
    ) -> CachedFile:
        """Moves a checked download into the cache and writes its sidecar."""
        data, info_path = self.data_path(request), self.info_path(request)
        digest = hashlib.sha256()
        with part.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        size = part.stat().st_size
        fetched_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        part.chmod(0o444)
        part.replace(data)
        info = {
            "format": CACHE_FORMAT,
            "request": request.identity(),
            "described": request.describe(),
            "cost_usd": cost_usd,
            "bytes": size,
            "records": records,
            "sha256": digest.hexdigest(),
            "compression": "zstd",
            "fetched_at": fetched_at,
            "gateway": gateway,
        }
        tmp = info_path.with_name(f".{info_path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(info, indent=1) + "\n")
            tmp.replace(info_path)
        finally:
            tmp.unlink(missing_ok=True)
        return CachedFile(data, size, records, cost_usd, fetched_at)


class HistoricalClient:
    """The `databento.Historical` client, with its errors and warnings made one line each."""

    def __init__(self, key: str | None, gateway: str, notice: Notice) -> None:
        if not key or not key.strip():
            raise DatabentoError(f"no Databento API key: {KEY_HINT}")
        import databento  # noqa: PLC0415 (loads pandas: only when a request goes out)

        self._key = key.strip()
        self._gateway = gateway
        self._notice = notice
        try:
            self._client: databento.Historical = databento.Historical(
                key=self._key, gateway=gateway
            )
        except ValueError as exc:
            raise DatabentoError(self._scrub(f"Databento client: {exc}")) from None

    def cost(self, request: RangeRequest) -> float:
        """The price in USD that `metadata.get_cost` quotes for the request."""
        value = self._call(
            "metadata.get_cost",
            lambda: self._client.metadata.get_cost(**_selection(request)),
        )
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise DatabentoError(f"Databento metadata.get_cost answered {value!r}, not a price")
        return float(value)

    def download(self, request: RangeRequest, dest: Path, progress: Progress | None) -> None:
        """Streams `timeseries.get_range` into dest (which must not exist), as sent: zstd DBN."""
        with _growth_reported(dest, progress):
            self._call(
                "timeseries.get_range",
                lambda: self._client.timeseries.get_range(
                    **_selection(request), stype_out=request.stype_out, path=dest
                ),
            )

    def _call(self, endpoint: str, call: Callable[[], T]) -> T:
        import requests  # noqa: PLC0415 (the client's own, loaded with it)
        from databento.common.error import BentoError, BentoHttpError  # noqa: PLC0415

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return call()
            except BentoHttpError as exc:
                raise DatabentoError(
                    self._scrub(f"Databento {endpoint}: {_one_line(exc)}")
                ) from None
            except requests.RequestException as exc:
                raise DatabentoError(
                    self._scrub(
                        f"cannot reach the Databento gateway {self._gateway} ({endpoint}): "
                        f"{_reason(exc)}"
                    )
                ) from None
            except BentoError as exc:
                raise DatabentoError(
                    self._scrub(f"Databento {endpoint}: {_one_line(exc)}")
                ) from None
            except OSError as exc:
                raise InputError(self._scrub(f"{endpoint}: {_one_line(exc)}")) from None
            except ValueError as exc:  # the client's checks of arguments and of what it got
                raise DatabentoError(
                    self._scrub(f"Databento {endpoint}: {_one_line(exc)}")
                ) from None
            finally:
                for warning in caught:
                    line = _one_line(warning.message)
                    self._notice(self._scrub(f"Databento {endpoint} warns: {line}"))

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***")


def fetch(
    request: RangeRequest,
    *,
    cache: DownloadCache,
    key: str | None,
    gateway: str,
    cost_limit_usd: float,
    confirmed: bool,
    notice: Notice,
    progress: Progress | None = None,
) -> Fetched:
    """The request's file from the cache, or else quoted, checked against the limit,
    downloaded and cached. Raises CostLimitError, DatabentoError or InputError."""
    with cache.held(request, notice):
        cached = cache.lookup(request, notice)
        if cached is not None:
            return Fetched(cached, from_cache=True)
        client = HistoricalClient(key, gateway, notice)
        cost = client.cost(request)
        if cost > cost_limit_usd and not confirmed:
            raise CostLimitError(
                f"{request.describe()} costs {usd(cost)}, more than the cost limit of "
                f"{usd(cost_limit_usd)} (MBO_DATABENTO__COST_LIMIT_USD or --cost-limit); run "
                "again with --yes to pay for it"
            )
        over = ", confirmed with --yes" if cost > cost_limit_usd else ""
        notice(f"{request.describe()} costs {usd(cost)} (limit {usd(cost_limit_usd)}{over})")
        part = cache.part_path(request)
        part.unlink(missing_ok=True)  # a part left by a killed fetch that had this pid
        try:
            client.download(request, part, progress)
            records = _check_download(part, request)
            stored = cache.store(request, part, cost_usd=cost, records=records, gateway=gateway)
        finally:
            part.unlink(missing_ok=True)
        return Fetched(stored, from_cache=False)


def _check_download(part: Path, request: RangeRequest) -> int:
    """The number of MBO records in a download, or DatabentoError if it is not a whole zstd DBN
    MBO file of the request's dataset."""
    try:
        source = open_mbo(part)
        records = sum(len(batch) for batch in source.batches())
    except InputError as exc:
        raise DatabentoError(f"the gateway's answer is not a whole DBN MBO file: {exc}") from None
    if not source.compressed:
        raise DatabentoError("the gateway's answer is not zstd-compressed, as the client asked")
    if source.dataset != request.dataset:
        raise DatabentoError(f"the gateway sent {source.dataset} data for {request.dataset}")
    return records


@contextlib.contextmanager
def _growth_reported(path: Path, progress: Progress | None) -> Iterator[None]:
    """Calls progress(new bytes) while something writes to path (the client, which offers no
    callback of its own), from a thread that looks at the file's size."""
    if progress is None:
        yield
        return
    seen = 0
    stop = threading.Event()

    def report() -> None:
        nonlocal seen
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size > seen:
            progress(size - seen)
            seen = size

    def watch() -> None:
        while not stop.wait(_WATCH_EVERY_S):
            report()

    watcher = threading.Thread(target=watch, name="fetch-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
    report()


def _one_line(message: object) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return ": ".join(lines) or type(message).__name__


def _reason(exc: BaseException) -> str:
    """The innermost reason of a requests error (urllib3's, without the retry wrapping)."""
    inner: object = exc.args[0] if exc.args else exc
    inner = getattr(inner, "reason", inner)
    return _one_line(inner)
