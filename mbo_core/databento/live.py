"""Databento's Live API for MBO data: a session of one or more connections, and what they got.

A request (`LiveRequest`) is a dataset, symbols in one symbology, and where the books start:
from a snapshot (`snapshot=True`: the gateway first sends each instrument's whole book, a Clear
then an Add per resting order, all flagged F_SNAPSHOT, the last one F_LAST), or from a time
within the last 24 hours (`start`: intraday replay, every record since then).

`LiveFeed` runs the session on the official client, `databento.Live`, which does the TCP
connection, the CRAM authentication, the subscription and the DBN decoding on its own thread:

- `open()` makes connection 1 (connect, authenticate, subscribe). A refused key or dataset, or a
  gateway that cannot be reached, raises DatabentoError: one line, never the key.
- `start()` starts the stream. Records arrive on the client's thread and are kept, raw, per
  connection, until `take()` hands them over in order, as `Segment`s of MBO records.
- A connection that ends without being asked to (dropped, reset, closed by the gateway, silent
  for longer than the heartbeat interval plus SILENCE_MARGIN_S, or an ErrorMsg saying records
  were skipped) is a **gap**: logged,
  counted in `mbo_live_gaps_total{reason}`, and followed at once by a new connection that
  subscribes again with a snapshot. Its records are `Segment`s of the next connection number:
  the caller makes each connection a run of its own, whose books start empty and are rebuilt
  by the snapshot. Reconnection attempts that fail (the gateway unreachable) are retried after
  RECONNECT_FIRST_S, doubling to RECONNECT_MAX_S, and the session fails after
  RECONNECT_ATTEMPTS of them in a row (so does a run of connections that bring no record).
  The client's own `reconnect_policy` is not used: it resubscribes without a snapshot when the
  session began with `start` (books after the gap would be wrong) and gives no point in the
  record stream where the new connection's records begin.
- ErrorMsg records end the session (`failure`), as the gateway ends it for every fatal code;
  a symbol that fails to resolve does too (the gateway would stream the others), so a typo is an
  error, not a silently missing instrument. The caller gets what arrived before.
- SystemMsg records: heartbeats are counted, the others (subscription acknowledged, slow
  reader, replay completed) logged.
- `stop()` closes the connection; what was received stays for `take()`.
- `record=PATH` writes the raw stream as a DBN file (zstd if the name ends in .zst): the first
  connection's metadata, then every record of every connection as received, so `mbo book` and
  `mbo run --replay` read it (after a gap, the next snapshot's Clear records restart its books).

The client is imported only when a connection is made: it loads pandas (~0.5 s).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import databento_dbn
import numpy as np
import zstandard

from mbo_core.databento.historical import (
    KEY_HINT,
    DatabentoError,
    SType,
    checked_selection,
    format_time,
    parse_time,
)
from mbo_core.errors import InputError, MboError
from mbo_core.metrics import LIVE_GAPS
from mbo_core.records import MBO_DTYPE

if TYPE_CHECKING:
    import databento

log = logging.getLogger("mbo.databento.live")

SCHEMA: Final = "mbo"
#: After a gap the first connection attempt is made at once; failed ones are retried after
#: this, doubling up to RECONNECT_MAX_S, and the session fails after RECONNECT_ATTEMPTS in a row.
RECONNECT_FIRST_S: Final = 0.5
RECONNECT_MAX_S: Final = 30.0
RECONNECT_ATTEMPTS: Final = 10
#: How long `stop()` waits for the gateway to close the connection before aborting it.
STOP_WAIT_S: Final = 2.0
#: The gateway sends a heartbeat after this long without data (the client's default, 30 s).
HEARTBEAT_S: Final = 30
#: A connection silent for the heartbeat interval plus this is closed as a gap. The client's own
#: monitor would give up 10 s after the interval, but it leaves the socket open.
SILENCE_MARGIN_S = 5.0
#: How often the watcher looks at a connection's silence.
WATCH_EVERY_S: Final = 1.0
#: The pre-flight check's limits (the client's own: 10 s to connect, 30 s to authenticate).
CONNECT_TIMEOUT_S: Final = 10.0
AUTH_TIMEOUT_S: Final = 30.0
#: A recording ends a zstd frame at least this often: a killed session leaves a file that is
#: readable up to its last whole frame.
RECORD_FRAME_S: Final = 1.0
#: ErrorMsg codes (databento_dbn.ErrorCode) that are gaps, not the end: records were skipped.
_SKIPPED_RECORDS = 7
_SYMBOL_RESOLUTION_FAILED = 4


def default_gateway(dataset: str) -> str:
    """The dataset's own Live gateway, as the client picks it: glbx-mdp3.lsg.databento.com."""
    return f"{dataset.lower().replace('.', '-')}.lsg.databento.com"


@dataclass(frozen=True, slots=True)
class LiveRequest:
    """One Live subscription to MBO data, normalised."""

    dataset: str
    symbols: tuple[str, ...]  # sorted, without duplicates
    stype_in: SType
    start: int | None = None  # intraday replay from here (UNIX ns); None: from now
    snapshot: bool = True  # the gateway sends every book whole first (start must be None)

    @classmethod
    def of(
        cls,
        dataset: str,
        symbols: str | Sequence[str],
        stype_in: str = "raw_symbol",
        start: str | None = None,
        snapshot: bool | None = None,
    ) -> LiveRequest:
        """The request, or InputError naming what is wrong. Without `start`, a snapshot unless
        `snapshot` is False; with `start`, no snapshot (the two exclude each other)."""
        code, names, stype = checked_selection(dataset, symbols, stype_in)
        first = None if start is None else parse_time(start, "start")
        if first is not None and snapshot:
            raise InputError(
                "--start and --snapshot exclude each other: a snapshot is the book now, --start "
                "replays every record since then"
            )
        take_snapshot = first is None if snapshot is None else snapshot
        return cls(code, names, stype, first, take_snapshot)

    def describe(self) -> str:
        shown = ",".join(self.symbols[:5])
        if len(self.symbols) > 5:
            shown += f",... ({len(self.symbols)} symbols)"
        if self.start is not None:
            how = f"replayed from {format_time(self.start)}"
        else:
            how = "from a snapshot" if self.snapshot else "from now, without a snapshot"
        return f"{self.dataset} {SCHEMA} {shown} ({self.stype_in}) {how}"


@dataclass(frozen=True, slots=True)
class Segment:
    """Records that arrived on one connection of the session, in arrival order."""

    connection: int  # 1, 2, ...: which connection of the session (a new one after each gap)
    records: np.ndarray  # MBO_DTYPE (read-only)
    symbols: dict[int, str]  # instrument_id -> raw symbol: mappings that came with them
    ended: bool  # the connection is over: nothing more comes on it


class GatewayUnreachableError(DatabentoError):
    """The gateway did not answer (connection refused or timed out): worth trying again."""


def _one_line(message: object) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return ": ".join(lines) or type(message).__name__


async def _in_daemon_thread(work: Callable[[], None]) -> None:
    """`work()` (blocking: connect, authenticate, subscribe) on a daemon thread of its own, not
    the default executor's: asyncio.run waits for those at exit, and a stop during a connection
    attempt to a gateway that does not answer must not wait the client's 40 s of timeouts."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            work()
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="databento-live-connect", daemon=True).start()
    await done


def quiet_client_logs() -> None:
    """The client logs every connection, subscription and gateway error itself (ERROR lines for
    what this module turns into one error line, or a gap warning, of its own): silenced."""
    logging.getLogger("databento").setLevel(logging.CRITICAL)


class _Connection:
    """One connection of the session: a `databento.Live` client, and what arrived on it.

    The client calls `_on_record` on its own thread; everything it keeps is behind `_lock`,
    and `take()` swaps it out for the caller's thread."""

    def __init__(self, feed: LiveFeed, number: int, *, start: int | None, snapshot: bool) -> None:
        self.number = number
        self._feed = feed
        self._start = start
        self._snapshot = snapshot
        self._lock = threading.Lock()
        self._mbo = bytearray()
        self._raw = bytearray()
        self._symbols: dict[int, str] = {}
        self._notes: list[tuple[int, str]] = []  # (log level, line): logged by take()
        self.metadata: bytes | None = None  # the stream's DBN metadata, encoded
        self.records = 0
        self.last_ts_event: int | None = None
        self.heartbeats = 0
        self.system_messages = 0
        self.fatal: list[str] = []  # ErrorMsg texts that end the session
        #: Why this connection ends with a gap that the client would not see: (reason, text).
        self.cut: tuple[str, str] | None = None
        self.last_seen = time.monotonic()  # when a record (any) last arrived
        self.closed = False  # over: no record arrives any more (set by the feed's watcher)
        self.opened_at = time.monotonic()
        self.client: databento.Live | None = None
        self._loop = asyncio.get_running_loop()
        self.flagged = asyncio.Event()  # fatal or cut: the watcher must end the connection

    # -- on the caller's thread

    def open(self) -> None:
        """Connect, authenticate and subscribe (blocking: run it in a thread)."""
        import databento  # noqa: PLC0415 (loads pandas: only when a session starts)
        from databento.common.error import BentoError  # noqa: PLC0415

        feed = self._feed
        request = feed.request
        try:
            client = databento.Live(
                key=feed.key,
                gateway=feed.gateway,
                port=feed.port,
                heartbeat_interval_s=feed.heartbeat_s,
            )
            client.add_callback(self._on_record)
        except ValueError as exc:
            raise DatabentoError(feed.scrub(f"Databento Live client: {_one_line(exc)}")) from None
        self.client = client
        try:
            client.subscribe(
                dataset=request.dataset,
                schema=SCHEMA,
                symbols=list(request.symbols),
                stype_in=request.stype_in,
                start=self._start,
                snapshot=self._snapshot,
            )
        except (BentoError, ValueError) as exc:
            self.terminate()
            raise feed.refusal(exc) from None

    def start(self) -> None:
        assert self.client is not None
        self.last_seen = time.monotonic()
        self.client.start()

    def stop(self) -> None:
        """Ask for the connection to close; what already arrived is kept."""
        if self.client is not None:
            with contextlib.suppress(Exception):  # ValueError: never connected
                self.client.stop()

    def terminate(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.terminate()

    async def wait_closed(self) -> BaseException | None:
        """Until the connection is over: None if it closed cleanly, else why it failed."""
        assert self.client is not None
        try:
            await self.client.wait_for_close()
        except Exception as exc:  # BentoError: reset, dropped, timed out, the gateway's errors
            return exc
        return None

    def take(self) -> tuple[bytes, bytes, dict[int, str], list[tuple[int, str]]]:
        """What arrived since the last call: MBO records, the raw stream, symbols, log notes."""
        with self._lock:
            taken = (bytes(self._mbo), bytes(self._raw), self._symbols, self._notes)
            self._mbo.clear()
            self._raw.clear()
            self._symbols, self._notes = {}, []
        return taken

    # -- on the client's thread

    def _on_record(self, record: Any) -> None:
        try:
            self._keep(record)
        except Exception as exc:  # a bug here must end the session, not vanish in the client
            with self._lock:
                self.fatal.append(f"cannot handle a {type(record).__name__} record: {exc!r}")
            self._loop.call_soon_threadsafe(self.flagged.set)

    def _keep(self, record: Any) -> None:
        self.last_seen = time.monotonic()
        flag = False
        with self._lock:
            if (self.fatal or self.cut) and not isinstance(record, databento_dbn.ErrorMsg):
                return  # after the end or the gap: not part of this connection's run
            raw = bytes(record)
            if self.metadata is None and self.client is not None:
                metadata = self.client.metadata
                self.metadata = metadata.encode() if metadata is not None else None
            if isinstance(record, databento_dbn.MBOMsg):
                self._mbo += raw
                self.records += 1
                self.last_ts_event = record.ts_event
            elif isinstance(record, databento_dbn.SymbolMappingMsg):
                symbol = str(record.stype_out_symbol)
                self._symbols[int(record.instrument_id)] = symbol
                line = f"{record.stype_in_symbol} is {symbol}, instrument {record.instrument_id}"
                self._notes.append((logging.INFO, line))
            elif isinstance(record, databento_dbn.SystemMsg):
                if record.is_heartbeat():
                    self.heartbeats += 1
                    return  # not recorded either: it carries nothing
                self.system_messages += 1
                self._notes.append((logging.INFO, f"gateway: {record.msg}"))
            elif isinstance(record, databento_dbn.ErrorMsg):
                code = getattr(record.code, "value", None)
                text = str(record.err)
                self._notes.append((logging.ERROR, f"gateway error ({record.code}): {text}"))
                if code == _SKIPPED_RECORDS:
                    self.cut = ("skipped", f"the gateway skipped records: {text}")
                elif code == _SYMBOL_RESOLUTION_FAILED or not self.fatal:
                    self.fatal.append(text)
                flag = True
            if self._feed.recording:
                self._raw += raw
        if flag:
            self._loop.call_soon_threadsafe(self.flagged.set)


class _Recorder:
    """The raw stream as a DBN file: the first metadata, then every record as received."""

    def __init__(self, path: Path) -> None:
        if path.exists():
            raise InputError(f"{path}: exists; --record writes a new file")
        if not path.parent.is_dir():
            raise InputError(f"{path.parent}: no such directory (for --record)")
        self.path = path
        self._file: IO[bytes] | None = None
        self._zstd: Any = None
        self._framed_at = time.monotonic()

    def write(self, metadata: bytes | None, raw: bytes) -> None:
        if not raw:
            return
        try:
            if self._file is None:
                if metadata is None:
                    raise MboError("Databento Live sent records before its metadata")
                self._file = self.path.open("xb")
                if self.path.name.endswith(".zst"):
                    self._zstd = zstandard.ZstdCompressor(level=3).stream_writer(
                        self._file, closefd=False
                    )
                self._out().write(metadata)
            self._out().write(raw)
            now = time.monotonic()
            if now - self._framed_at >= RECORD_FRAME_S:
                self._framed_at = now
                self._flush()
        except OSError as exc:
            raise MboError(f"{self.path}: cannot record: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._file is None:
            return
        try:
            if self._zstd is not None:
                self._zstd.close()
            self._file.close()
        except OSError as exc:
            raise MboError(f"{self.path}: cannot record: {exc.strerror or exc}") from None
        finally:
            self._file = None

    def _out(self) -> Any:
        return self._zstd if self._zstd is not None else self._file

    def _flush(self) -> None:
        if self._zstd is not None:
            self._zstd.flush(zstandard.FLUSH_FRAME)
        assert self._file is not None
        self._file.flush()


class LiveFeed:
    """A Live session of MBO data (see the module doc). Use from one asyncio event loop."""

    def __init__(
        self,
        request: LiveRequest,
        *,
        key: str | None,
        gateway: str | None,
        port: int,
        record: Path | None = None,
        heartbeat_s: int = HEARTBEAT_S,
    ) -> None:
        if not key or not key.strip():
            raise DatabentoError(f"no Databento API key: {KEY_HINT}")
        self.request = request
        self.heartbeat_s = heartbeat_s
        self.key = key.strip()
        self.gateway = gateway
        self.port = port
        self.address = f"{gateway or default_gateway(request.dataset)}:{port}"
        self._recorder = _Recorder(record) if record is not None else None
        self._connections: list[_Connection] = []  # every one made
        self._pending: collections.deque[_Connection] = collections.deque()  # not all taken
        self._current: _Connection | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._empty_streak = 0  # connections in a row that brought no record
        #: Why the session ended by itself (a gateway error, no reconnection possible).
        self.failure: DatabentoError | None = None
        self.gaps = 0
        quiet_client_logs()

    @property
    def recording(self) -> bool:
        return self._recorder is not None

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def records(self) -> int:
        return sum(c.records for c in self._connections)

    @property
    def heartbeats(self) -> int:
        return sum(c.heartbeats for c in self._connections)

    @property
    def system_messages(self) -> int:
        return sum(c.system_messages for c in self._connections)

    @property
    def ended(self) -> bool:
        """Nothing more will arrive: stopped, or ended by the gateway or a failure."""
        return self._watcher is not None and self._watcher.done()

    def scrub(self, text: str) -> str:
        return text.replace(self.key, "***")

    def refusal(self, exc: BaseException) -> DatabentoError:
        """The client's failure to connect or authenticate, as one line."""
        text = _one_line(exc)
        failed = re.fullmatch(r"Connection to \S+ failed: (.*)", text)
        if failed is not None or text.startswith(("Connection to ", "Authentication with ")):
            reason = failed.group(1) if failed is not None else text
            return GatewayUnreachableError(
                self.scrub(f"cannot reach the Databento Live gateway {self.address}: {reason}")
            )
        return DatabentoError(self.scrub(f"Databento Live: {text}"))

    async def open(self) -> None:
        """Connection 1: connect, authenticate, subscribe. DatabentoError if refused."""
        request = self.request
        connection = _Connection(self, 1, start=request.start, snapshot=request.snapshot)
        await _in_daemon_thread(connection.open)
        self._add(connection)

    def start(self) -> None:
        """Start the stream (after `open`)."""
        assert self._current is not None and self._watcher is None
        self._current.start()
        log.info("Databento Live %s: streaming from %s", self.request.describe(), self.address)
        self._watcher = asyncio.create_task(self._watch(self._current), name="databento-live")

    def take(self) -> list[Segment]:
        """What arrived since the last call, oldest connection first."""
        taken: list[Segment] = []
        while self._pending:
            connection = self._pending[0]
            ended = connection.closed  # read first: once closed, nothing more arrives
            mbo, raw, symbols, notes = connection.take()
            for level, line in notes:
                log.log(level, "Databento Live connection %d: %s", connection.number, line)
            if self._recorder is not None:
                # The file's metadata: the first the session got (a new one per connection).
                metadata = next((c.metadata for c in self._connections if c.metadata), None)
                self._recorder.write(metadata, raw)
            if mbo or symbols or ended:
                records = np.frombuffer(mbo, dtype=MBO_DTYPE)
                taken.append(Segment(connection.number, records, symbols, ended))
            if not ended:
                break
            self._pending.popleft()
        return taken

    async def stop(self) -> None:
        """End the session: the connection closes (what it received stays for `take()`), no
        reconnection. Aborts what does not close within STOP_WAIT_S."""
        self._stopping.set()
        current = self._current
        if current is not None and not current.closed:
            current.stop()
        watcher = self._watcher
        if watcher is None:
            return
        done, _ = await asyncio.wait({watcher}, timeout=STOP_WAIT_S)
        if not done:
            if current is not None:
                current.terminate()
            done, _ = await asyncio.wait({watcher}, timeout=1.0)
        if not done:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def close(self) -> None:
        """Stop everything and finish the recording (always call it, last)."""
        if not self.ended:
            await self.stop()
        for connection in self._connections:
            connection.terminate()
        if self._recorder is not None:
            self._recorder.close()

    def _add(self, connection: _Connection) -> None:
        self._connections.append(connection)
        self._pending.append(connection)
        self._current = connection

    async def _watch(self, connection: _Connection) -> None:
        """Each connection until it is over; after a gap, the next one."""
        try:
            current: _Connection | None = connection
            while current is not None:
                outcome = await self._until_over(current)
                current.closed = True
                if current.fatal:
                    self.failure = DatabentoError(
                        self.scrub(f"Databento Live: {'; '.join(current.fatal)}")
                    )
                    return
                if self._stopping.is_set():
                    return
                self._gap(current, outcome)
                current = await self._reconnect(current)
        except DatabentoError as exc:
            self.failure = exc
        except Exception as exc:
            log.exception("Databento Live session failed")
            self.failure = DatabentoError(self.scrub(f"Databento Live: {_one_line(exc)}"))
        finally:
            if self._current is not None:
                self._current.closed = True

    async def _until_over(self, connection: _Connection) -> BaseException | None:
        closed = asyncio.ensure_future(connection.wait_closed())
        flagged = asyncio.ensure_future(connection.flagged.wait())
        silence = self.heartbeat_s + SILENCE_MARGIN_S
        try:
            while True:
                done, _ = await asyncio.wait(
                    {closed, flagged}, timeout=WATCH_EVERY_S, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    break
                silent = time.monotonic() - connection.last_seen
                if silent > silence:
                    connection.cut = ("timeout", f"nothing received for {silent:.0f} s")
                    break
            if not closed.done():
                connection.stop()  # a fatal error, skipped records or silence: we leave
                done, _ = await asyncio.wait({closed}, timeout=STOP_WAIT_S)
                if not done:
                    connection.terminate()
            return await closed
        finally:
            flagged.cancel()

    def _gap(self, connection: _Connection, outcome: BaseException | None) -> None:
        if connection.cut is not None:
            reason, why = connection.cut
        elif outcome is None:
            reason, why = "closed", "the gateway closed the connection"
        elif "timeout" in str(outcome).lower():
            reason, why = "timeout", _one_line(outcome)
        else:
            reason, why = "dropped", _one_line(outcome)
        self.gaps += 1
        LIVE_GAPS.labels(reason=reason).inc()
        last = connection.last_ts_event
        log.warning(
            "Databento Live: gap: connection %d ended after %d records (last ts_event %s): %s; "
            "reconnecting with a snapshot, as a new run",
            connection.number,
            connection.records,
            format_time(last) if last is not None else "none",
            self.scrub(why),
            extra={"event": "live_gap", "reason": reason, "connection": connection.number},
        )

    async def _reconnect(self, previous: _Connection) -> _Connection | None:
        """The next connection, subscribed with a snapshot; None if stopped meanwhile."""
        self._empty_streak = self._empty_streak + 1 if previous.records == 0 else 0
        failures = self._empty_streak
        last = "the connections brought no record"
        while failures < RECONNECT_ATTEMPTS:
            if failures:
                delay = min(RECONNECT_FIRST_S * 2 ** (failures - 1), RECONNECT_MAX_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return None
            connection = _Connection(self, self.connections + 1, start=None, snapshot=True)
            try:
                await _in_daemon_thread(connection.open)
            except GatewayUnreachableError as exc:
                failures += 1
                last = str(exc)
                log.warning("Databento Live: reconnecting failed (%d): %s", failures, exc)
                continue
            if self._stopping.is_set():
                connection.terminate()
                return None
            self._add(connection)
            connection.start()
            log.warning(
                "Databento Live: reconnected: connection %d, from a snapshot", connection.number
            )
            return connection
        raise DatabentoError(
            f"Databento Live: lost the gateway {self.address} and could not reconnect "
            f"({RECONNECT_ATTEMPTS} attempts): {last}"
        )


async def check_access(
    request: LiveRequest, *, key: str | None, gateway: str | None, port: int
) -> None:
    """Connect and authenticate (the key, the dataset), then leave: no subscription, no data.
    DatabentoError saying why not."""
    from databento.common.error import BentoError  # noqa: PLC0415
    from databento.live.protocol import DatabentoLiveProtocol  # noqa: PLC0415

    if not key or not key.strip():
        raise DatabentoError(f"no Databento API key: {KEY_HINT}")
    secret = key.strip()
    quiet_client_logs()
    host = gateway or default_gateway(request.dataset)
    address = f"{host}:{port}"
    loop = asyncio.get_running_loop()

    def scrub(text: str) -> str:
        return text.replace(secret, "***")

    try:
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(
                lambda: DatabentoLiveProtocol(secret, request.dataset), host, port
            ),
            CONNECT_TIMEOUT_S,
        )
    except (OSError, TimeoutError) as exc:
        reason = _one_line(exc) if str(exc) else "timed out"
        raise GatewayUnreachableError(
            scrub(f"cannot reach the Databento Live gateway {address}: {reason}")
        ) from None
    try:
        await asyncio.wait_for(protocol.authenticated, AUTH_TIMEOUT_S)
    except TimeoutError:
        raise GatewayUnreachableError(
            f"cannot reach the Databento Live gateway {address}: no authentication reply in "
            f"{AUTH_TIMEOUT_S:.0f} s"
        ) from None
    except BentoError as exc:
        raise DatabentoError(scrub(f"Databento Live: {_one_line(exc)}")) from None
    finally:
        transport.close()
