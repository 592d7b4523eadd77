"""A slow live-feed client on a real pipeline: CLX5 replayed in a loop through the API's replay
control and a real `mbo process` worker, so the book keeps changing throughout.

One client completes the WebSocket handshake on a raw socket with a tiny receive buffer and then
reads nothing, until the kernel's buffers (small on both ends, so that this takes seconds) and
then the server's own write buffer are full and the server's sends to it block.
Meanwhile a normal client must keep getting updates at its rate, the server must send the stuck
one nothing more (no per-client queue: its memory is one blocked send), and when the slow client
finally reads it must end on the newest state after at most a couple of messages beyond what was
already in the socket buffers when it got stuck. Assertions are on message counts and content,
with wide margins, never on timings a loaded machine could miss.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import orjson
import pytest
from websockets.sync.client import connect as ws_connect

from api.app import create_app
from producer.app import produce_file
from tests.api.pipeline import HOST, Served, processor, serve, wait_until
from tests.api.test_app import CLX5_ID, module_settings
from tests.conftest import ClickHouseBackend
from tests.paths import CLX5

pytestmark = pytest.mark.integration

SLOW_HZ = 50
NORMAL_HZ = 5
STALL_S = 8.0
#: Receive buffer of the slow client and send buffer of the server's end of its connection
#: (the kernel doubles both): a few kilobytes each.
SOCKET_BUFFER = 4096


@pytest.fixture(scope="module")
def changing(
    kafka_bootstrap: str,
    clickhouse_backend: ClickHouseBackend,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """The API (live consumer, no sink: nothing here reads ClickHouse) while CLX5 replays in a
    loop at 10,000 records/s."""
    settings = module_settings(
        kafka_bootstrap, clickhouse_backend, tmp_path_factory.mktemp("slow") / "data",
        replay_dir=str(CLX5.parent),
    )  # fmt: skip
    # No keepalive pings: the stuck client could not answer them, and a ping timeout closing
    # it mid-test would be about pings, not about flow control.
    with (
        serve(
            create_app(settings, file_replay=produce_file), settings, ws_ping_interval=None
        ) as server,
        processor(settings),
        httpx.Client(base_url=server.base, timeout=30) as http,
    ):
        started = http.post("/v1/replay", json={"file": CLX5.name, "rate": 10_000, "loop": 100})
        assert started.status_code == 202, started.text
        wait_until(lambda: http.get(f"/v1/instruments/{CLX5_ID}/bbo").status_code == 200,
                   120, "no BBO of CLX5 reached the API")  # fmt: skip
        try:
            yield server
        finally:
            http.post("/v1/replay/stop")


class RawWebSocket:
    """A WebSocket client on a plain socket that reads only when asked to."""

    def __init__(self, port: int, path: str, rcvbuf: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect(), so that the advertised window is small from the start.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect((HOST, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    @property
    def local_port(self) -> int:
        return cast(int, self.sock.getsockname()[1])

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError("the server closed the slow client's connection")
        self.buffer += chunk

    def _need(self, size: int) -> None:
        while len(self.buffer) < size:
            self._receive()

    def _frame(self) -> tuple[int, bool, bytes]:
        # Bytes are consumed only once a whole frame is buffered, so a timeout loses nothing.
        self._need(2)
        opcode, fin = self.buffer[0] & 0x0F, bool(self.buffer[0] & 0x80)
        length, offset = self.buffer[1] & 0x7F, 2  # server frames are never masked
        if length >= 126:
            width = 2 if length == 126 else 8
            self._need(2 + width)
            length, offset = int.from_bytes(self.buffer[2 : 2 + width], "big"), 2 + width
        self._need(offset + length)
        payload = self.buffer[offset : offset + length]
        self.buffer = self.buffer[offset + length :]
        return opcode, fin, payload

    def messages(self, quiet_s: float) -> list[bytes]:
        """Every message that arrives until none has for `quiet_s` seconds."""
        self.sock.settimeout(quiet_s)
        out: list[bytes] = []
        parts: list[bytes] = []
        while True:
            try:
                opcode, fin, payload = self._frame()
            except TimeoutError:
                return out
            assert opcode != 0x8, f"the server closed the slow client: {payload!r}"
            if opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if fin:
                    out.append(b"".join(parts))
                    parts = []

    def close(self) -> None:
        self.sock.close()


def _server_transport(served: Served, client_port: int) -> asyncio.WriteTransport | None:
    """The server side of the connection from `client_port` (uvicorn's live connections)."""
    for connection in served.server.server_state.connections:
        if getattr(connection, "client", None) == (HOST, client_port):
            return cast(asyncio.WriteTransport, cast(Any, connection).transport)
    return None


def _websocket_messages_sent(http: httpx.Client) -> float:
    """mbo_api_live_messages_total{kind="websocket"}: messages whose send has returned."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith('mbo_api_live_messages_total{kind="websocket"}'):
            return float(line.rpartition(" ")[2])
    return 0.0


def test_slow_client_never_slows_others_nor_queues(changing: Served) -> None:
    state = changing.app.state.live
    key = state.resolve(CLX5_ID, None)
    assert key is not None
    live = f"/v1/instruments/{CLX5_ID}/live"
    with httpx.Client(base_url=changing.base, timeout=30) as http:
        sent_at_start = _websocket_messages_sent(http)
        slow = RawWebSocket(changing.port, f"{live}?max_hz={SLOW_HZ}&depth=10", SOCKET_BUFFER)
        try:
            transport = wait_until(
                lambda: _server_transport(changing, slow.local_port), 30, "no server connection"
            )
            # The kernel autotunes a send buffer up to megabytes (tcp_wmem), which at CLX5's
            # ~1.4 kB per message and a few dozen messages a second would take minutes to fill
            # before the server's own buffer does; a small fixed one gets there in seconds.
            server_socket = transport.get_extra_info("socket")
            server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            _, high = transport.get_write_buffer_limits()
            # Stuck: the server's buffer for it passed the high-water mark, so the transport
            # paused writing and the slow client's next send waits for it to drain.
            wait_until(lambda: transport.get_write_buffer_size() > high, 120,
                       "the slow client's buffers never filled")  # fmt: skip
            sent_to_slow = _websocket_messages_sent(http) - sent_at_start

            version_before = state.version(key)
            buffered: list[int] = []
            received: list[float] = []
            with ws_connect(f"{changing.ws}{live}?max_hz={NORMAL_HZ}&depth=10") as normal:
                assert orjson.loads(normal.recv(timeout=30))["type"] == "snapshot"
                started = time.monotonic()
                while (left := started + STALL_S - time.monotonic()) > 0:
                    try:
                        message = orjson.loads(normal.recv(timeout=left))
                    except TimeoutError:
                        break
                    assert message["type"] == "update"
                    received.append(time.monotonic() - started)
                    buffered.append(transport.get_write_buffer_size())
                sent_during_stall = _websocket_messages_sent(http) - sent_at_start - sent_to_slow
            changes = state.version(key) - version_before

            # The normal client kept its rate (~NORMAL_HZ * STALL_S = 40 updates expected)
            # through the whole stall, well past the moment the slow one got stuck.
            assert len(received) >= NORMAL_HZ * STALL_S / 4, received
            assert sum(t > STALL_S / 2 for t in received) >= NORMAL_HZ * STALL_S / 8, received
            # ... while the book changed far more often than anyone was told (conflation).
            assert changes > len(received), (changes, len(received))
            # Nothing was sent to (or queued for) the slow client during the stall: the messages
            # sent were the normal client's (its snapshot and updates, give or take the couple
            # in flight when the counter was read; a per-client queue would have taken ~20 a
            # second for the slow one), and the server's buffer for the slow one stayed stuck
            # above the high-water mark without growing.
            slow_during_stall = sent_during_stall - (1 + len(received))
            assert slow_during_stall <= 3, (sent_during_stall, len(received))
            assert min(buffered) > high, buffered

            # The slow client reads at last, once the book stopped changing: what was in the
            # socket buffers when it got stuck, then the state its blocked send carried, then
            # the newest state, and nothing else.
            http.post("/v1/replay/stop")
            _wait_unchanged(lambda: state.version(key), 3.0, 120)
            messages = slow.messages(quiet_s=3.0)
        finally:
            slow.close()
        book = http.get(f"/v1/instruments/{CLX5_ID}/book", params={"depth": 10}).json()
        bbo_answer = http.get(f"/v1/instruments/{CLX5_ID}/bbo")
    # A stop right after a loop's Clear leaves the new copy's empty book without a BBO yet: the
    # REST route says so with a 404, the live feed with a null BBO.
    if bbo_answer.status_code == 404:
        assert bbo_answer.json() == {"detail": f"no BBO yet for instrument {CLX5_ID}"}
        bbo = None
    else:
        assert bbo_answer.status_code == 200, bbo_answer.text
        bbo = bbo_answer.json()
    last = orjson.loads(messages[-1])
    assert last["book"] == book and last["bbo"] == bbo
    # (+1 spare: a late snapshot of the processor after the settling wait.)
    assert len(messages) <= sent_to_slow + 3, (len(messages), sent_to_slow)
    largest = max(len(message) for message in messages) + 14  # + the frame header
    assert max(buffered) <= high + 2 * largest, (max(buffered), high, largest)


def _wait_unchanged(read: Any, quiet_s: float, timeout: float) -> None:
    """Wait until read() has returned the same value for quiet_s seconds."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, "the live state never settled"
        time.sleep(0.2)
        if (now := read()) != value:
            value, since = now, time.monotonic()
