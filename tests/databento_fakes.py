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
import json
import shutil
import ssl
import subprocess
import threading
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
