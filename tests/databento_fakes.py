"""A fake Databento Historical gateway on loopback, over HTTPS: `mbo fetch` without the internet
or a real key.

It answers what databento-python's `Historical` client sends for `metadata.get_cost` and
`timeseries.get_range` (databento/historical/api/, databento/common/http.py), the way the real
gateway does (the shapes of databento-cpp's mock HTTP server and of the gateway's answers):

- `POST /v0/metadata.get_cost`, an application/x-www-form-urlencoded body (dataset, start, end,
  symbols, schema, stype_in, stype_out): a JSON number, the cost in USD;
- `POST /v0/timeseries.get_range`, the same fields and encoding=dbn, compression=zstd:
  application/octet-stream, chunked, with `Content-Disposition: attachment`: a zstd DBN stream
  (here: `body`, as given).

Authentication is HTTP basic, the key as the user name and an empty password. Errors are the
gateway's JSON, `{"detail": {"case", "message", "status_code", "docs", "payload"}}`, which the
client turns into "<status> <case>\\n<message>": 401 auth_authentication_failed for an unknown
key (the real case and message), 403 for a key without the dataset's licence, 422
symbology_invalid_request "None of the symbols could be resolved" (real) when no symbol is
known, 422 for an unknown dataset and 400 for a malformed request (the wording of these three is
this fake's). `warning` adds the gateway's X-Warning header (a JSON list of "Kind: message").

The certificate is self-signed for 127.0.0.1 and localhost, made with the `openssl` command; a
client trusts it through REQUESTS_CA_BUNDLE, which requests (the client's HTTP library) reads.
Every request is recorded (`requests`, `count()`), so tests can tell what was asked and paid.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import select
import shutil
import socket
import socketserver
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import parse_qs

COST_PATH = "/v0/metadata.get_cost"
RANGE_PATH = "/v0/timeseries.get_range"
CHUNK_BYTES = 64 * 1024
SYMBOLOGY_DOCS = "https://databento.com/docs/api-reference-historical/basics/symbology"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate (cert.pem, the CA bundle too) and its key for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the fake gateway needs the openssl command for its certificate")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@dataclass(frozen=True)
class Recorded:
    path: str
    form: dict[str, str]
    user: str | None  # the basic-auth user name: the API key


@dataclass
class FakeHistorical:
    """The gateway; use as a context manager (it stops and joins its threads on exit)."""

    body: bytes  # what get_range sends: zstd DBN
    cert: Path
    cert_key: Path
    keys: frozenset[str]
    unlicensed_keys: frozenset[str] = frozenset()
    datasets: frozenset[str] = frozenset({"GLBX.MDP3"})
    symbols: frozenset[str] = frozenset({"CLX5"})
    cost_usd: float = 0.0412
    warning: str | None = None  # an X-Warning on get_range, e.g. "Warning: reduced quality"
    cut_after: int | None = None  # get_range: drop the connection after this many bytes
    requests: list[Recorded] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for request in self.requests if request.path == path)

    def forms(self, path: str) -> list[dict[str, str]]:
        with self._lock:
            return [request.form for request in self.requests if request.path == path]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> FakeHistorical:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.cert_key)
        handler = type("Handler", (_Handler,), {"gateway": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-historical"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeHistorical:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)


def _detail(
    status: int, case: str, message: str, docs: str | None = None, payload: Any = None
) -> dict[str, Any]:
    return {
        "detail": {
            "case": case,
            "message": message,
            "status_code": status,
            "docs": docs,
            "payload": payload,
        }
    }


class _Handler(BaseHTTPRequestHandler):
    gateway: ClassVar[FakeHistorical]
    protocol_version = "HTTP/1.1"
    server_version = "fake-databento-historical"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    def do_GET(self) -> None:
        self._json(404, {"detail": f"Not Found: {self.path}"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        form = {name: values[-1] for name, values in parse_qs(raw, keep_blank_values=True).items()}
        user = self._user()
        self.gateway.record(Recorded(self.path, form, user))
        if self.path not in (COST_PATH, RANGE_PATH):
            self._json(404, {"detail": f"Not Found: {self.path}"})
            return
        if user is None or user not in self.gateway.keys | self.gateway.unlicensed_keys:
            self._json(401, _detail(401, "auth_authentication_failed", "Authentication failed."))
            return
        if self.headers.get("Content-Type") != "application/x-www-form-urlencoded":
            self._json(400, _detail(400, "request_invalid", "Expected a form body."))
            return
        problem = self._check(form, user)
        if problem is not None:
            self._json(*problem)
        elif self.path == COST_PATH:
            self._json(200, self.gateway.cost_usd)
        else:
            self._stream()

    def _user(self) -> str | None:
        kind, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
        if kind != "Basic":
            return None
        try:
            user, _, _password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return None
        return user

    def _check(self, form: dict[str, str], user: str) -> tuple[int, Any] | None:
        required = ["dataset", "start", "end", "symbols", "schema", "stype_in", "stype_out"]
        if self.path == RANGE_PATH:
            required += ["encoding", "compression"]
        missing = [name for name in required if not form.get(name)]
        if missing:
            message = f"Missing required field(s): {', '.join(missing)}."
            return 400, _detail(400, "request_invalid", message)
        if self.path == RANGE_PATH and (form["encoding"], form["compression"]) != ("dbn", "zstd"):
            return 400, _detail(400, "request_invalid", "This fake sends only zstd DBN.")
        dataset = form["dataset"]
        if dataset not in self.gateway.datasets:
            return 422, _detail(422, "dataset_invalid", f"Unknown dataset '{dataset}'.")
        if user in self.gateway.unlicensed_keys:
            message = f"No license for dataset '{dataset}'."
            return 403, _detail(403, "auth_no_dataset_entitlement", message)
        symbols = form["symbols"].split(",")
        if not set(symbols) & self.gateway.symbols:
            return 422, _detail(
                422,
                "symbology_invalid_request",
                "None of the symbols could be resolved",
                docs=SYMBOLOGY_DOCS,
                payload={"dataset": dataset, "symbols": symbols, "stype_in": form["stype_in"]},
            )
        return None

    def _json(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self) -> None:
        body, cut = self.gateway.body, self.gateway.cut_after
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Disposition", "attachment; filename=glbx-mdp3.mbo.dbn.zst")
        self.send_header("Transfer-Encoding", "chunked")
        if self.gateway.warning is not None:
            self.send_header("X-Warning", json.dumps([self.gateway.warning]))
        self.end_headers()
        end = len(body) if cut is None else min(cut, len(body))
        for offset in range(0, end, CHUNK_BYTES):
            chunk = body[offset : min(offset + CHUNK_BYTES, end)]
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        if cut is not None:
            # Closed mid-stream, without the last chunk: a broken download.
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")


# --- the Live gateway -----------------------------------------------------------------------

#: CLX5's instrument id on GLBX.MDP3 (the file's metadata maps CLX5 to it).
CLX5_ID = 432669
LIVE_VERSION = "0.9.0-fake"
F_LAST = 128
F_SNAPSHOT = 32
F_BAD_TS_RECV = 8
UNDEF_PRICE = (1 << 63) - 1


@dataclass(frozen=True)
class LivePlan:
    """What one started session of the fake Live gateway sends after its symbol mappings:
    `records` (raw MBO records, MBO_DTYPE) in writes of `chunk_records`, then `error` if set
    (an ErrorMsg, code INTERNAL_ERROR unless `error_code` says otherwise), then it ends:

    - "hold": heartbeats (SystemMsg) every `FakeLive.heartbeat_s` until the client leaves,
      like a gateway with nothing more to send;
    - "close": a clean close (FIN) straight after the last record: a drop that loses nothing
      the gateway wrote;
    - "reset": a TCP reset (SO_LINGER 0): a drop that may lose what the client had not read;
    - "silent": nothing more, not even heartbeats, until the client leaves (a stalled gateway).
    """

    records: Any  # np.ndarray of mbo_core.records.MBO_DTYPE
    end: str = "hold"
    error: str | None = None
    error_code: int | None = None
    chunk_records: int = 512
    pause_s: float = 0.002  # between writes: a stream over time, not one burst


@dataclass
class LiveConnection:
    """What one connection to the fake did and was asked."""

    auth: Any = None  # databento.live.gateway.AuthenticationRequest
    subscriptions: list[Any] = field(default_factory=list)  # SubscriptionRequest
    started: bool = False
    plan: int | None = None  # index of the LivePlan it was given
    records_sent: int = 0
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass
class FakeLive:
    """A fake Databento Live gateway on 127.0.0.1 speaking the real protocol, as databento-python's
    own mock live server does (tests/mockliveserver in databento/databento-python): greeting
    `lsg_version=...`, CRAM challenge `cram=...`, the client's authentication line (its response
    is the SHA-256 of `cram|key`, then `-` and the key's last five characters), the reply
    `success=1|session_id=...` or `success=0|error=...`, subscription lines, `start_session`;
    then a DBN stream: metadata, a SymbolMappingMsg per resolved symbol, a SystemMsg
    acknowledging the subscription, an ErrorMsg (SYMBOL_RESOLUTION_FAILED) per unknown symbol, and
    what the session's `LivePlan` says (`plans[k]` for the k-th started session; the last plan
    for any later one). Connections that never start (a key check) use no plan.

    Use as a context manager: on exit every connection is closed and every thread joined."""

    keys: frozenset[str]
    plans: list[LivePlan]
    datasets: frozenset[str] = frozenset({"GLBX.MDP3"})
    symbols: dict[str, int] = field(default_factory=lambda: {"CLX5": CLX5_ID})
    heartbeat_s: float = 0.2
    connections: list[LiveConnection] = field(default_factory=list)
    _server: Any = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sockets: set[Any] = field(default_factory=set)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _started_sessions: int = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def started(self) -> list[LiveConnection]:
        """The connections that started a session, in order."""
        with self._lock:
            return [c for c in self.connections if c.started]

    def start(self) -> FakeLive:
        handler = type("LiveHandler", (_LiveHandler,), {"gateway": self})
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = False
        server.block_on_close = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-live"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.socket.close()  # refuse new connections from here on
            with self._lock:
                sockets = list(self._sockets)
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._server.server_close()  # joins the connection threads
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeLive:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def take_plan(self, connection: LiveConnection) -> LivePlan:
        with self._lock:
            index = min(self._started_sessions, len(self.plans) - 1)
            self._started_sessions += 1
            connection.started = True
            connection.plan = index
            return self.plans[index]

    def track(self, sock: Any, connection: LiveConnection | None) -> None:
        with self._lock:
            if connection is None:
                self._sockets.discard(sock)
            else:
                self._sockets.add(sock)
                self.connections.append(connection)


class _LiveHandler(socketserver.BaseRequestHandler):
    gateway: ClassVar[FakeLive]

    def handle(self) -> None:
        sock = self.request
        connection = LiveConnection()
        self.gateway.track(sock, connection)
        try:
            self._session(sock, connection)
        except OSError:
            pass  # the client left
        finally:
            connection.finished.set()
            self.gateway.track(sock, None)

    def _session(self, sock: Any, connection: LiveConnection) -> None:
        from databento.common import cram  # noqa: PLC0415
        from databento.live.gateway import (  # noqa: PLC0415
            AuthenticationRequest,
            AuthenticationResponse,
            ChallengeRequest,
            Greeting,
            SessionStart,
            SubscriptionRequest,
            parse_gateway_message,
        )

        challenge = secrets.token_hex(16)
        sock.sendall(bytes(Greeting(lsg_version=LIVE_VERSION)))
        sock.sendall(bytes(ChallengeRequest(cram=challenge)))
        lines = _Lines(sock)
        line = lines.next()
        if line is None:
            return
        auth = AuthenticationRequest.parse(line)
        connection.auth = auth
        known = [
            key
            for key in self.gateway.keys
            if auth.auth == cram.get_challenge_response(challenge, key)
        ]
        if not known:
            reply = AuthenticationResponse(success="0", error="Authentication failed.")
        elif auth.dataset not in self.gateway.datasets:
            reply = AuthenticationResponse(success="0", error=f"Unknown dataset: {auth.dataset}")
        else:
            reply = AuthenticationResponse(success="1", session_id=secrets.token_hex(4))
        sock.sendall(bytes(reply))
        if reply.success != "1":
            return
        while True:
            line = lines.next()
            if line is None:
                return
            message = parse_gateway_message(line)
            if isinstance(message, SubscriptionRequest):
                connection.subscriptions.append(message)
            elif isinstance(message, SessionStart):
                break
        plan = self.gateway.take_plan(connection)
        sock.sendall(self._head(auth.dataset, connection.subscriptions))
        self._stream(sock, connection, plan)

    def _head(self, dataset: str, subscriptions: list[Any]) -> bytes:
        import databento_dbn  # noqa: PLC0415

        dbn: Any = databento_dbn  # (its stubs type the enums' members as str and int)

        now = time.time_ns()
        parts = [
            dbn.Metadata(
                dataset=dataset,
                start=now,
                stype_in=None,
                stype_out=dbn.SType.INSTRUMENT_ID,
                schema=None,
                version=3,
            ).encode()
        ]
        for number, subscription in enumerate(subscriptions):
            for symbol in str(subscription.symbols).split(","):
                instrument = self.gateway.symbols.get(symbol)
                if instrument is None:
                    parts.append(
                        bytes(
                            dbn.ErrorMsg(
                                ts_event=now,
                                err=f"Failed to resolve symbol: {symbol}",
                                code=dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED,
                            )
                        )
                    )
                    continue
                parts.append(
                    bytes(
                        dbn.SymbolMappingMsg(
                            publisher_id=1,
                            instrument_id=instrument,
                            ts_event=now,
                            stype_in=dbn.SType.RAW_SYMBOL,
                            stype_in_symbol=symbol,
                            stype_out=dbn.SType.RAW_SYMBOL,
                            stype_out_symbol=symbol,
                            start_ts=now,
                            end_ts=now + 86_400 * 10**9,
                        )
                    )
                )
            parts.append(
                bytes(
                    dbn.SystemMsg(
                        ts_event=now,
                        msg=f"Subscription request {number} for {subscription.schema} data "
                        "succeeded",
                        code=dbn.SystemCode.SUBSCRIPTION_ACK,
                    )
                )
            )
        return b"".join(parts)

    def _stream(self, sock: Any, connection: LiveConnection, plan: LivePlan) -> None:
        import databento_dbn  # noqa: PLC0415

        dbn: Any = databento_dbn  # (its stubs type the enums' members as str and int)

        body = plan.records.tobytes()
        step = plan.chunk_records * 56
        for offset in range(0, len(body), step):
            if self.gateway._stopping.is_set():
                return
            piece = body[offset : offset + step]
            sock.sendall(piece)
            connection.records_sent += len(piece) // 56
            time.sleep(plan.pause_s)
        if plan.error is not None:
            code = plan.error_code if plan.error_code is not None else 6  # INTERNAL_ERROR
            sock.sendall(
                bytes(
                    dbn.ErrorMsg(ts_event=time.time_ns(), err=plan.error, code=dbn.ErrorCode(code))
                )
            )
            sock.shutdown(socket.SHUT_WR)
            _drain(sock)
            return
        if plan.end == "close":
            sock.shutdown(socket.SHUT_WR)
            _drain(sock)
            return
        if plan.end == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return
        while not self.gateway._stopping.is_set():
            readable, _, _ = select.select([sock], [], [], self.gateway.heartbeat_s)
            if readable and not sock.recv(65536):
                return  # the client closed its side
            if plan.end == "silent":
                continue
            sock.sendall(
                bytes(
                    dbn.SystemMsg(
                        ts_event=time.time_ns(), msg="Heartbeat", code=dbn.SystemCode.HEARTBEAT
                    )
                )
            )


class _Lines:
    """Newline-terminated control lines from a socket."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = b""

    def next(self) -> str | None:
        while b"\n" not in self._buffer:
            data = self._sock.recv(4096)
            if not data:
                return None
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode() + "\n"


def _drain(sock: Any) -> None:
    """Read until the client closes (after a clean close of our side)."""
    sock.settimeout(5)
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass


def mbo_snapshot(records: Any, instrument_id: int, ts_recv: int) -> Any:
    """The MBO snapshot the gateway would send of the book `records` (a stream that ends at an
    event boundary) built: a Clear, then an Add per resting order in priority order, flagged
    F_SNAPSHOT | F_BAD_TS_RECV, the last also F_LAST (docs: conventions/mbo-snapshot)."""
    import numpy as np  # noqa: PLC0415

    from mbo_core.records import MBO_DTYPE  # noqa: PLC0415
    from tests.reference_book import RefBook  # noqa: PLC0415

    book = RefBook()
    for r in records:
        book.apply(chr(r["action"]), chr(r["side"]), int(r["price"]), int(r["size"]),
                   int(r["order_id"]), int(r["flags"]))  # fmt: skip
    last = records[-1] if len(records) else None
    ts_event = int(last["ts_event"]) if last is not None else ts_recv
    sequence = int(last["sequence"]) if last is not None else 0
    orders = [
        (side, price, order_id, size)
        for side in ("B", "A")
        for price in sorted(book.sides[side], reverse=side == "B")
        for order_id, size in book.sides[side][price]
    ]
    out = np.zeros(1 + len(orders), dtype=MBO_DTYPE)
    out["length"], out["rtype"], out["publisher_id"] = 14, 0xA0, 1
    out["instrument_id"], out["ts_event"], out["ts_recv"] = instrument_id, ts_event, ts_recv
    out["flags"], out["sequence"] = F_SNAPSHOT | F_BAD_TS_RECV, sequence
    out[0]["action"], out[0]["side"], out[0]["price"] = ord("R"), ord("N"), UNDEF_PRICE
    for i, (side, price, order_id, size) in enumerate(orders, start=1):
        out[i]["action"], out[i]["side"] = ord("A"), ord(side)
        out[i]["price"], out[i]["order_id"], out[i]["size"] = price, order_id, size
    out[-1]["flags"] |= F_LAST
    return out
