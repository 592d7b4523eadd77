"""The local Kafka broker: Apache Kafka (KRaft, one combined broker+controller) on loopback.

Used by `mbo infra up/down/status`, the one-command run, the benches and the integration tests,
so that machines without Docker run the same broker as production. Its jars come from Maven
Central (`make setup` copies `infra/kafka/pom.xml`'s dependencies into `.tools/kafka/libs`);
Java 17+ runs it.

Everything lives under `<data_dir>/kafka` and is durable: stop the broker, kill -9 it, start it
again on the same data dir, and every topic, message and committed offset is there.

    <data_dir>/kafka/
        cluster.json        cluster id and the two loopback ports, fixed at the first start
        server.properties   written at every start from the settings and cluster.json
        log4j2.properties   the broker's logging: logs/server.log, rolled at 50 MB
        data/               log.dirs, formatted once: from the storage template that
                            `make setup` keeps (storage_template), else by kafka.tools.StorageTool
        logs/               server.log (Kafka's log), stdout.log (the JVM's own output)
        state.json, lock    the running broker's pid and ports; start/stop serialisation

`start_broker(settings, detach=True)` leaves the broker running after the caller exits (for
`mbo infra up`); `LocalBroker` is a context manager that stops it on exit (tests, `mbo run`)
and restarts it when it dies (`restart_if_exited`, called by `mbo run`'s supervisor). Either
way the pid and port go to `state.json`, which `broker_status`, `stop_broker` and
`mbo_core.kafka.clients.bootstrap_servers` read.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TypeVar

from mbo_core.errors import MboError
from mbo_core.kafka.probes import BROKER_HOST, free_port, kafka_answers, kafka_ready, port_open
from mbo_core.settings import Settings

log = logging.getLogger("mbo.broker")
_Record = TypeVar("_Record")

#: The JVM class-data archive of the installed Kafka (build_class_archive), beside its libs.
CLASS_ARCHIVE = "kafka-classes.jsa"
#: The storage tool's bootstrap metadata for a new log dir, kept beside the archive (see
#: storage_template); the file name carries the Kafka version it was formatted by.
_STORAGE_TEMPLATE = "bootstrap-{version}.checkpoint"
_BOOTSTRAP = "bootstrap.checkpoint"
NODE_ID = 1
_POLL_S = 0.05
# Attempts when a free port we picked is taken by someone else before the broker binds it.
_PORT_ATTEMPTS = 3
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class NodeFiles:
    """The files of one Kafka JVM, all under its directory: the local broker's `<data_dir>/kafka`
    or a node's of mbo_core.kafka.cluster (`<data_dir>/kafka-cluster/node-<i>`), which runs its
    nodes with this module's code."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log4j2(self) -> Path:
        return self.directory / "log4j2.properties"

    @property
    def storage(self) -> Path:
        """log.dirs: every topic's segments and the KRaft metadata log."""
        return self.directory / "data"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.logs / "stdout.log"


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
    controller_port: int
    config_file: str
    log_file: str
    started_at: float

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class BrokerStatus:
    state: BrokerState | None
    process_alive: bool
    answering: bool

    @property
    def running(self) -> bool:
        return self.state is not None and self.process_alive and self.answering


@dataclass(frozen=True)
class Cluster:
    """What stays fixed for a data dir's broker: its cluster id and (unless taken) its ports."""

    cluster_id: str
    port: int
    controller_port: int


def broker_dir(settings: Settings) -> Path:
    return settings.data_dir / "kafka"


def state_file(settings: Settings) -> Path:
    return broker_dir(settings) / "state.json"


def _cluster_file(settings: Settings) -> Path:
    return broker_dir(settings) / "cluster.json"


def _files(settings: Settings) -> NodeFiles:
    return NodeFiles(broker_dir(settings))


def storage_dir(settings: Settings) -> Path:
    """Kafka's log.dirs: every topic's segments and the KRaft metadata log."""
    return _files(settings).storage


def log_file(settings: Settings) -> Path:
    return _files(settings).server_log


def _write_atomically(path: Path, content: str | bytes) -> None:
    """Write under a name of this process's own, then rename: a reader (or a broker started on
    the file) never sees half of it, and two writers never share a partial file."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    if isinstance(content, str):
        partial.write_text(content)
    else:
        partial.write_bytes(content)
    partial.replace(path)


def _write_json(path: Path, value: object) -> None:
    _write_atomically(path, json.dumps(value, indent=2) + "\n")


def _read_json(path: Path, record: Callable[..., _Record]) -> _Record | None:
    """`record(**fields)` from the JSON object in `path`; None if there is no such file."""
    try:
        return record(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise MboError(f"unreadable broker file {path}: {exc}") from None


def read_state(settings: Settings) -> BrokerState | None:
    """The recorded broker of this data dir, alive or not; None if none was recorded."""
    return _read_json(state_file(settings), BrokerState)


def _remove_state(settings: Settings, state: BrokerState) -> None:
    # Only our own record: another broker may have been started for this data dir since.
    if read_state(settings) == state:
        state_file(settings).unlink(missing_ok=True)


def _locked(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """Serialises start/stop for one data dir across processes."""
    return _locked_dir(broker_dir(settings))


@contextlib.contextmanager
def _locked_dir(directory: Path) -> Iterator[None]:
    """An exclusive flock on `directory`/lock for the block, across processes."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def kafka_libs(settings: Settings) -> Path:
    """The directory of Apache Kafka's jars (MBO_BROKER__KAFKA_LIBS or .tools/kafka/libs)."""
    libs = settings.broker.kafka_libs or _SOURCE_ROOT / ".tools" / "kafka" / "libs"
    if not any(libs.glob("kafka_2.13-*.jar")):
        variable = "MBO_BROKER__KAFKA_LIBS"
        raise MboError(
            f"Apache Kafka is not installed in {libs}: run `make setup` (or point {variable} "
            "at a directory of Kafka's jars)"
        )
    return libs


def kafka_version(settings: Settings) -> str:
    """The installed broker's version, from its jar's name (kafka_2.13-4.1.1.jar: 4.1.1)."""
    jar = min(kafka_libs(settings).glob("kafka_2.13-*.jar"))
    return jar.stem.removeprefix("kafka_2.13-")


def java_executable(settings: Settings) -> str:
    """MBO_BROKER__JAVA, else $JAVA_HOME/bin/java, else java on PATH."""
    if settings.broker.java is not None:
        candidate = str(settings.broker.java)
    elif os.environ.get("JAVA_HOME"):
        candidate = str(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    else:
        candidate = shutil.which("java") or "java"
    if not os.access(candidate, os.X_OK):
        raise MboError(
            f"no Java to run the local Kafka broker ({candidate} is not executable): run "
            "`make setup`, which installs Debian's OpenJDK 17, or set MBO_BROKER__JAVA"
        )
    return candidate


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state first), None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ["?"]
    return stat.rpartition(")")[2].split()


#: /proc states of a process that has exited (a zombie not yet reaped, or dead).
_EXITED_STATES = ("Z", "X")


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc (R, S, Z, ...), None if there is no such process."""
    fields = _proc_stat(pid)
    return None if fields is None else fields[0]


def _proc_start_time(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot, /proc/<pid>/stat field 22): with the pid it
    names one process, even one that is exiting and whose command line is already gone."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def _is_our_broker(state: BrokerState) -> bool:
    """True if state.pid is alive and is the broker we started (not a recycled pid)."""
    return _is_our_process(state.pid, state.config_file)


def _is_our_process(pid: int, config_file: str) -> bool:
    """True if `pid` is alive and runs Kafka on `config_file` (not a recycled pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else: the command line check decides
    if not Path("/proc").is_dir():
        return True  # no /proc to check identity: trust the pid
    # A detached broker's parent may be an init that never reaps: a zombie is a dead broker.
    if _proc_state(pid) in (None, *_EXITED_STATES):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return config_file.encode() in cmdline


def broker_status(settings: Settings) -> BrokerStatus:
    state = read_state(settings)
    if state is None:
        return BrokerStatus(state=None, process_alive=False, answering=False)
    alive = _is_our_broker(state)
    answering = alive and kafka_answers(state.host, state.port)
    return BrokerStatus(state=state, process_alive=alive, answering=answering)


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's Uuid,
    which also never starts one with '-', since command lines would read it as an option)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def kraft_node_config(
    node_id: int, port: int, controller_port: int, voters: str, storage: Path
) -> dict[str, object]:
    """Who and where one combined KRaft node (broker and controller) is, on loopback; `voters`:
    controller.quorum.voters, `id@host:port` of every controller, this one's included."""
    listener = f"PLAINTEXT://{BROKER_HOST}:{port}"
    return {
        "process.roles": "broker,controller",
        "node.id": node_id,
        # A static quorum: the ports may change between starts of every node (a taken port),
        # and a static voter set needs nothing but this line in each node's configuration.
        "controller.quorum.voters": voters,
        "listeners": f"{listener},CONTROLLER://{BROKER_HOST}:{controller_port}",
        "advertised.listeners": listener,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": storage,
    }


def local_node_tuning() -> dict[str, object]:
    """What every local Kafka node runs with, the single broker's and a cluster's alike."""
    return {
        # Code that relies on auto-creation must fail here as it would in production.
        "auto.create.topics.enable": "false",
        "num.partitions": 1,
        # Groups form at once (the dev profile's 2 s sessions need the 500 ms minimum).
        "group.initial.rebalance.delay.ms": 0,
        "group.min.session.timeout.ms": 500,
        # After kill -9 the restarted broker waits for its old registration to expire before
        # it may register again: 3 s rather than Kafka's 9 s (controller and broker share the
        # process, so a missed heartbeat means the process is gone).
        "broker.session.timeout.ms": 3000,
        "broker.heartbeat.interval.ms": 750,
        # Two cores: fewer threads than Kafka's server defaults (3 network, 8 I/O).
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 2,
        "background.threads": 4,
    }


def properties_text(config: dict[str, object]) -> str:
    return "".join(f"{key}={value}\n" for key, value in config.items())


def server_properties(settings: Settings, cluster: Cluster) -> str:
    """The broker's configuration: one combined KRaft node on loopback, sized for 2 cores."""
    node = kraft_node_config(
        NODE_ID,
        cluster.port,
        cluster.controller_port,
        f"{NODE_ID}@{BROKER_HOST}:{cluster.controller_port}",
        storage_dir(settings),
    )
    # One node: every internal topic has one replica.
    replication = {
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
    }
    return properties_text({**node, **replication, **local_node_tuning()})


def log4j2_properties(settings: Settings) -> str:
    """Kafka's log to logs/server.log (50 MB x 4 at most); noisy request loggers at WARN."""
    return log4j2_config(log_file(settings))


def log4j2_config(logs: Path) -> str:
    """Kafka's log to `logs` (50 MB x 4 at most); noisy request loggers at WARN."""
    return "\n".join(
        [
            "status = warn",
            "appender.file.type = RollingFile",
            "appender.file.name = file",
            f"appender.file.fileName = {logs}",
            f"appender.file.filePattern = {logs}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 50MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 3",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = file",
            "logger.request.name = kafka.request.logger",
            "logger.request.level = WARN",
            "logger.state.name = state.change.logger",
            "logger.state.level = WARN",
            "",
        ]
    )


def class_archive(settings: Settings) -> Path:
    """The installed Kafka's JVM class-data archive (CDS), next to its jars' directory."""
    return kafka_libs(settings).parent / CLASS_ARCHIVE


def _archive_flags(settings: Settings, *, write_to: Path | None) -> list[str]:
    if write_to is not None:
        return [f"-XX:ArchiveClassesAtExit={write_to}"]
    archive = class_archive(settings)
    # A stale archive (another JDK, reinstalled jars) is refused by the JVM, which then loads
    # the classes as if there were none: the flag can never stop the broker.
    return [f"-XX:SharedArchiveFile={archive}"] if archive.exists() else []


def _jvm_command(
    settings: Settings,
    main_class: str,
    *args: str,
    heap: tuple[str, str] | None = None,
    write_archive: Path | None = None,
    files: NodeFiles | None = None,
) -> list[str]:
    """java ... main_class args; heap: (-Xms, -Xmx) values, default MBO_BROKER__HEAP_MB both.
    Uses the class archive when there is one; write_archive: record one there at exit.
    files: the node whose logging configuration and log dir it uses (default: the broker's)."""
    initial, maximum = heap or (f"{settings.broker.heap_mb}m",) * 2
    files = files or _files(settings)
    return [
        java_executable(settings),
        *_archive_flags(settings, write_to=write_archive),
        f"-Xms{initial}",
        f"-Xmx{maximum}",
        # C1 only: on two cores the C2 compiler's threads were the broker's biggest cost in runs
        # of minutes (2.7 of its 5.7 CPU-s in a 1M-record `mbo run`, against 1.4 s of request
        # handling); without C2 that run's broker used 2.5 CPU-s, and bench.broker's hop p99
        # fell from 4.3 to 2.6 ms, its CPU per record from 0.22 to 0.11 us (docs/infrastructure.md).
        "-XX:TieredStopAtLevel=1",
        # Kafka's own choices (bin/kafka-run-class.sh), and die rather than limp on OOM.
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        *settings.broker.jvm_options.split(),
        f"-Dlog4j2.configurationFile={files.log4j2}",
        f"-Dkafka.logs.dir={files.logs}",
        "-cp",
        f"{kafka_libs(settings)}/*",
        main_class,
        *args,
    ]


def _read_cluster(settings: Settings) -> Cluster | None:
    return _read_json(_cluster_file(settings), Cluster)


def _pick_port(configured: int, recorded: int | None, name: str) -> int:
    """The configured port, else the recorded one while it is free, else a free one."""
    if configured:
        if port_open(BROKER_HOST, configured):
            raise MboError(f"{name}={configured}: something already listens on that port")
        return configured
    if recorded and not port_open(BROKER_HOST, recorded):
        return recorded
    return free_port()


def _prepare(settings: Settings, *, new_ports: bool) -> Cluster:
    """cluster.json, server.properties and log4j2.properties; storage formatted on first use."""
    directory = broker_dir(settings)
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    recorded = _read_cluster(settings)
    broker_settings = settings.broker
    cluster = Cluster(
        cluster_id=recorded.cluster_id if recorded else new_cluster_id(),
        port=_pick_port(
            broker_settings.port,
            None if new_ports or not recorded else recorded.port,
            "MBO_BROKER__PORT",
        ),
        controller_port=_pick_port(
            broker_settings.controller_port,
            None if new_ports or not recorded else recorded.controller_port,
            "MBO_BROKER__CONTROLLER_PORT",
        ),
    )
    if cluster.controller_port == cluster.port:
        cluster = replace(cluster, controller_port=free_port())
    if cluster != recorded:
        _write_json(_cluster_file(settings), asdict(cluster))
    files = _files(settings)
    files.config.write_text(server_properties(settings, cluster))
    files.log4j2.write_text(log4j2_properties(settings))
    format_storage(settings, files, NODE_ID, cluster.cluster_id)
    return cluster


def storage_template(settings: Settings) -> Path:
    """The bootstrap metadata that the installed Kafka's storage tool writes into a new log dir
    (its feature levels: metadata.version, group.version, ...; no ids), kept by
    build_class_archive. It lets a new data dir be formatted without the tool's JVM run."""
    libs = kafka_libs(settings)
    return libs.parent / _STORAGE_TEMPLATE.format(version=kafka_version(settings))


def format_storage(settings: Settings, files: NodeFiles, node_id: int, cluster_id: str) -> None:
    """Format the node's log dir once (nothing if it is formatted): from the storage template
    when there is one, else with the storage tool, which reads files.config (write it first).

    The template holds no ids, so it formats any node of a cluster with a static voter set too
    (the tool writes the same bootstrap.checkpoint there, timestamps and CRCs aside)."""
    if (files.storage / "meta.properties").exists():
        return
    if storage_template(settings).exists():
        _format_from_template(settings, files.storage, node_id, cluster_id)
    else:
        _format_storage(settings, files, cluster_id)


def _format_from_template(settings: Settings, storage: Path, node_id: int, cluster_id: str) -> None:
    """Format a new log dir as `kafka-storage format` does: its bootstrap.checkpoint (the
    template's bytes) and meta.properties (version 1: node, cluster and a new directory id).
    0.6 CPU-s and 0.5 s less than starting the tool's JVM for every new data dir (a fresh
    `mbo run`, every test's broker). meta.properties goes last: it marks the dir formatted."""
    storage.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(storage_template(settings), storage / _BOOTSTRAP)
    _write_atomically(
        storage / "meta.properties",
        f"#\n#{time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}\n"
        f"node.id={node_id}\ndirectory.id={new_cluster_id()}\nversion=1\n"
        f"cluster.id={cluster_id}\n",
    )
    log.info("formatted Kafka storage in %s (cluster %s)", storage, cluster_id)


def _format_storage(settings: Settings, files: NodeFiles, cluster_id: str) -> None:
    command = _jvm_command(
        settings,
        "kafka.tools.StorageTool",
        "format",
        f"--cluster-id={cluster_id}",
        "--config",
        str(files.config),
        "--ignore-formatted",
        heap=("64m", "256m"),  # the storage tool needs no big heap
        files=files,
    )
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=120, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()
        raise MboError(
            f"formatting the Kafka storage in {files.storage} failed: " + " | ".join(output[-3:])
        )
    log.info("formatted Kafka storage in %s (cluster %s)", files.storage, cluster_id)


def _die_with_parent() -> None:  # pragma: no cover (runs in the child between fork and exec)
    # PR_SET_PDEATHSIG: an attached broker must not outlive a test run killed with -9.
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _spawn(
    settings: Settings,
    out: IO[bytes],
    *,
    detach: bool,
    write_archive: Path | None = None,
    files: NodeFiles | None = None,
    heap: tuple[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Kafka on files.config (default: the broker's), its output to `out`."""
    files = files or _files(settings)
    command = _jvm_command(
        settings,
        "kafka.Kafka",
        str(files.config),
        heap=heap,
        write_archive=write_archive,
        files=files,
    )
    die_with_parent = not detach and sys.platform.startswith("linux")
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=out,
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
    interesting = [line for line in text if "ERROR" in line or "Exception" in line] or text
    return " | ".join(interesting[-lines:])


def _wait_ready(
    process: subprocess.Popen[bytes], port: int, timeout_s: float, what: str = "the local broker"
) -> int | None:
    """None once the broker serves clients; its exit code if it died first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            return code
        if kafka_ready(BROKER_HOST, port, timeout_s=1.0):
            return None
        time.sleep(_POLL_S)
    _terminate(process, timeout_s=5.0)
    raise MboError(f"{what} did not answer on {BROKER_HOST}:{port} in {timeout_s:g} s")


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
    settings: Settings, *, detach: bool, keep_ports: bool = False, fresh: bool = False
) -> tuple[BrokerState, subprocess.Popen[bytes]]:
    status = broker_status(settings)
    if status.state is not None:
        if status.process_alive:
            raise BrokerAlreadyRunningError(status.state)
        _remove_state(settings, status.state)  # stale: that broker is gone, its data is not
    if fresh:
        # Only here, under the lock and with no live broker: never a running broker's data.
        shutil.rmtree(storage_dir(settings), ignore_errors=True)
        _cluster_file(settings).unlink(missing_ok=True)

    stdout_path = broker_dir(settings) / "logs" / "stdout.log"
    attempts = 1 if keep_ports else _PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        started = time.monotonic()
        cluster = _prepare(settings, new_ports=attempt > 1)
        with stdout_path.open("ab") as out:
            out.write(f"--- mbo: starting Kafka on {BROKER_HOST}:{cluster.port}\n".encode())
            out.flush()
            process = _spawn(settings, out, detach=detach)
        exit_code = _wait_ready(process, cluster.port, settings.broker.start_timeout_s)
        if exit_code is None:
            state = BrokerState(
                pid=process.pid,
                host=BROKER_HOST,
                port=cluster.port,
                controller_port=cluster.controller_port,
                config_file=str(broker_dir(settings) / "server.properties"),
                log_file=str(log_file(settings)),
                started_at=time.time(),
            )
            _write_json(state_file(settings), asdict(state))
            log.info(
                "Kafka %s ready on %s in %.1f s (pid %d, data %s)",
                kafka_version(settings),
                state.bootstrap_servers,
                time.monotonic() - started,
                state.pid,
                storage_dir(settings),
            )
            return state, process
        if attempt == attempts:
            tail = _log_tail(log_file(settings)) or _log_tail(stdout_path)
            raise MboError(
                f"the local broker exited with code {exit_code} at start: {tail} "
                f"(logs: {log_file(settings).parent})"
            )
    raise AssertionError("unreachable")  # pragma: no cover


def build_class_archive(settings: Settings) -> Path:
    """Write the class archive of the installed Kafka (`make setup` does): boot a throwaway
    broker in a scratch data dir with -XX:ArchiveClassesAtExit and stop it cleanly, so the JVM
    writes the classes it loaded. Every later start (and the storage tool) maps them instead of
    loading and verifying each class: on the 2-core machine the broker was ready in 1.5 s
    instead of 2.5-2.8 s, with 1.4 instead of 2.3-2.6 CPU-s, the storage format 0.6 instead of
    1.0 CPU-s. The scratch dir's bootstrap metadata, formatted by the storage tool itself,
    becomes the storage template (storage_template). Returns the archive's path."""
    target = class_archive(settings)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    template = storage_template(settings)
    template.unlink(missing_ok=True)  # the scratch dir is formatted by the tool, not a template
    with tempfile.TemporaryDirectory(prefix="mbo-class-archive-") as scratch:
        scratch_settings = settings.model_copy(update={"data_dir": Path(scratch)})
        cluster = _prepare(scratch_settings, new_ports=True)
        _write_atomically(template, (storage_dir(scratch_settings) / _BOOTSTRAP).read_bytes())
        stdout_path = broker_dir(scratch_settings) / "logs" / "stdout.log"
        with stdout_path.open("ab") as out:
            process = _spawn(scratch_settings, out, detach=False, write_archive=partial)
        try:
            exit_code = _wait_ready(process, cluster.port, settings.broker.start_timeout_s)
            if exit_code is not None:
                raise MboError(
                    f"the broker exited with code {exit_code} while recording its class "
                    f"archive: {_log_tail(log_file(scratch_settings)) or _log_tail(stdout_path)}"
                )
            _serve_archive_traffic(scratch_settings, cluster.port)
        finally:
            # SIGTERM: Kafka shuts down cleanly and the JVM writes the archive as it exits.
            _terminate(process, timeout_s=60.0)
        if not partial.exists():
            raise MboError(f"the JVM wrote no class archive (its output: {_log_tail(stdout_path)})")
    partial.replace(target)
    return target


def _serve_archive_traffic(settings: Settings, port: int) -> None:
    """Have the scratch broker serve every kind of request the stages make, so that the classes
    serving them are in the archive too (mbo_core/kafka/archive_traffic.py): without them each
    run loaded and verified those classes from the jars at its first requests."""
    import asyncio  # noqa: PLC0415

    from mbo_core.kafka import archive_traffic  # noqa: PLC0415

    kafka = settings.kafka.model_copy(update={"bootstrap_servers": f"{BROKER_HOST}:{port}"})
    asyncio.run(archive_traffic.exercise(settings.model_copy(update={"kafka": kafka})))


def start_broker(settings: Settings, *, detach: bool) -> BrokerState:
    """Start the data dir's Kafka broker, wait until it serves clients, record it.

    detach=True: the broker outlives this process (stop it with stop_broker). detach=False:
    it is this process's child and dies with it; prefer LocalBroker, which also stops it.
    Raises BrokerAlreadyRunningError if this data dir's broker is alive, MboError on failure.
    """
    with _locked(settings):
        state, _process = _start_locked(settings, detach=detach)
    return state


def _wait_gone(state: BrokerState, started: str | None, timeout_s: float) -> bool:
    """Wait until the broker has exited: its pid is gone, a zombie or another process.

    `started` (its start time, taken while it was known to be ours) follows the process to its
    end: an exiting JVM drops its command line before it becomes a zombie, so the command line
    check alone would report it gone while it still holds its files and threads.
    """

    def gone() -> bool:
        if started is None:
            return not _is_our_broker(state)
        fields = _proc_stat(state.pid)  # one read: the state and the start time together
        return fields is None or fields[0] in _EXITED_STATES or fields[19:20] != [started]

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gone():
            return True
        time.sleep(_POLL_S)
    return gone()


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _stop_state(settings: Settings, state: BrokerState) -> None:
    started = _proc_start_time(state.pid)
    if _is_our_broker(state):
        _signal(state.pid, signal.SIGTERM)
        if not _wait_gone(state, started, settings.broker.stop_timeout_s):
            _signal(state.pid, signal.SIGKILL)
            if not _wait_gone(state, started, 5.0):
                raise MboError(f"the local broker (pid {state.pid}) survived SIGKILL")
    _remove_state(settings, state)


def stop_broker(settings: Settings) -> BrokerState | None:
    """Stop this data dir's broker (SIGTERM, then SIGKILL after MBO_BROKER__STOP_TIMEOUT_S).

    Its data stays in `<data dir>/kafka`. Returns the state of the broker that was recorded
    (running or stale), None if none was.
    """
    with _locked(settings):
        state = read_state(settings)
        if state is not None:
            _stop_state(settings, state)
        return state


class LocalBroker:
    """A local broker as a child process for the duration of a `with` block.

    It is stopped on exit, on error too, and (Linux) killed if this process dies first.
    `restart_if_exited` starts it again on the same ports and data when it died meanwhile.
    """

    def __init__(self, settings: Settings, *, fresh: bool = False) -> None:
        """fresh=True: delete the data dir's Kafka storage (topics, messages, offsets) first."""
        self._settings = settings
        self._fresh = fresh
        self._process: subprocess.Popen[bytes] | None = None
        self._state: BrokerState | None = None
        self.restarts = 0

    @property
    def state(self) -> BrokerState:
        if self._state is None:
            raise MboError("the local broker is not running")
        return self._state

    @property
    def bootstrap_servers(self) -> str:
        return self.state.bootstrap_servers

    @property
    def pid(self) -> int | None:
        """The running broker's pid; None before start, after stop or once it has died."""
        return self._state.pid if self._state and self.exit_code() is None else None

    def start(self) -> BrokerState:
        with _locked(self._settings):
            self._state, self._process = _start_locked(
                self._settings, detach=False, fresh=self._fresh
            )
        return self._state

    def exit_code(self) -> int | None:
        """The broker's exit code if it has died (reaped, so no zombie stays), else None."""
        return None if self._process is None else self._process.poll()

    def restart_if_exited(self) -> bool:
        """Start the broker again, on the same ports and data, if it died; True if it did.

        The clients of the stages keep their bootstrap address and reconnect by themselves.
        """
        code = self.exit_code()
        if code is None or self._state is None:
            return False
        old = self._state
        log.warning("the local broker (pid %d) exited with code %d: restarting it", old.pid, code)
        ports = {"port": old.port, "controller_port": old.controller_port}
        settings = self._settings.model_copy(
            update={"broker": self._settings.broker.model_copy(update=ports)}
        )
        with _locked(self._settings):
            self._state, self._process = _start_locked(settings, detach=False, keep_ports=True)
        self.restarts += 1
        return True

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
