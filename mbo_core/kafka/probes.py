"""Kafka without a client: is a port free or taken, and does host:port speak Kafka
(ApiVersions) and serve clients (Metadata). One request each, by hand over a blocking socket,
so the probes need no event loop and run anywhere, including inside async code that must not
nest loops (`mbo infra status`, the broker's start-up wait, the tests)."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

log = logging.getLogger("mbo.kafka")

BROKER_HOST = "127.0.0.1"
_API_VERSIONS, _METADATA = 18, 3


def free_port(host: str = BROKER_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _request(
    host: str, port: int, api_key: int, version: int, body: bytes, timeout_s: float
) -> bytes:
    """One Kafka request with a v1 header (non-flexible); the response after its correlation id.

    Hand-rolled so that the probes need no event loop and can run anywhere, including inside
    async code that must not nest loops.
    """
    correlation_id = 0x4D424F  # any value; the reply must echo it
    client_id = b"mbo-probe"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    request = header + body
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        if not 4 <= size <= 1 << 24:
            raise ConnectionError(f"not a Kafka response (size {size})")
        response = _recv_exactly(sock, size)
    (reply_correlation,) = struct.unpack_from(">i", response)
    if reply_correlation != correlation_id:
        raise ConnectionError("not a Kafka response (correlation id)")
    return response[4:]


def kafka_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True if host:port answers a Kafka ApiVersions request, i.e. speaks Kafka, not just TCP."""
    try:
        response = _request(host, port, _API_VERSIONS, 0, b"", timeout_s)
        (error_code,) = struct.unpack_from(">h", response)
    except (OSError, struct.error):  # ConnectionError is an OSError
        return False
    # 35 UNSUPPORTED_VERSION: a broker that dropped v0 still answers like Kafka.
    return error_code in (0, 35)


def kafka_ready(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True once host:port serves clients: a Metadata request lists at least one broker.

    A KRaft broker answers ApiVersions while it is still fenced (catching up with the metadata
    log); Metadata lists only unfenced brokers, so topics can be created once this is true.
    """
    # Metadata v4 (the oldest Kafka 4 serves): no topics (an empty array), no auto-creation.
    body = struct.pack(">i?", 0, False)
    try:
        response = _request(host, port, _METADATA, 4, body, timeout_s)
        _throttle_ms, brokers = struct.unpack_from(">ii", response)
    except (OSError, struct.error):
        return False
    return bool(brokers >= 1)


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def bootstrap_answers(bootstrap: str) -> bool:
    """True if a server of `bootstrap` (host:port,... on plaintext listeners) answers Kafka."""
    servers = [s.strip().rsplit(":", 1) for s in bootstrap.split(",") if s.strip()]
    return any(kafka_answers(host, int(port)) for host, port in servers)


#: How often a stage's watch asks the bootstrap servers whether Kafka answers.
WATCH_EVERY_S = 5.0


def watch_kafka(bootstrap: str, stage: str, *, every_s: float = WATCH_EVERY_S) -> bool:
    """Keep `mbo_kafka_reachable{stage}` up to date from a daemon thread: 1 while a server of
    `bootstrap` (host:port,...) answers ApiVersions, 0 while none does (with a warning when it
    changes). Plaintext listeners only: returns False, watching nothing, for TLS or SASL ones
    (the caller passes only plaintext bootstraps)."""
    from mbo_core.metrics import KAFKA_REACHABLE  # noqa: PLC0415

    if not bootstrap.strip(", "):
        return False
    gauge = KAFKA_REACHABLE.labels(stage)

    def watch() -> None:
        reachable: bool | None = None
        while True:
            now = bootstrap_answers(bootstrap)
            if reachable is not None and now != reachable:
                log.warning(
                    "Kafka at %s %s", bootstrap, "answers again" if now else "does not answer"
                )
            reachable = now
            gauge.set(1 if now else 0)
            time.sleep(every_s)

    threading.Thread(target=watch, name="kafka-watch", daemon=True).start()
    return True
