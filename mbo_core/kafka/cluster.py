"""A local Apache Kafka cluster: three KRaft nodes on loopback, each a broker and a controller.

The single local broker (mbo_core.kafka.broker) proves the pipeline's code against real Kafka;
this cluster proves what one broker cannot: that a node killed with -9 mid-stream loses
nothing and stalls the producers only for the leader election. Its nodes run with the broker
module's own code (JVM flags, class archive, storage template, logging, readiness probe), with
what a replicated production cluster has on top: replication factor 3, min.insync.replicas 2,
no unclean leader election, and failure detection fast enough for tests (docs/cluster.md).

    <data_dir>/kafka-cluster/
        cluster.json            the cluster id and every node's two ports, fixed at first start
        state.json, lock        the running nodes' pids and ports; start/stop serialisation
        node-<i>/               one per node (node.id i, from 1), as the broker's directory:
            server.properties   written at every start
            log4j2.properties   logs/server.log, rolled at 50 MB
            data/               log.dirs, formatted once (storage template, else StorageTool)
            logs/               server.log (Kafka's), stdout.log (the JVM's)

Durable like the single broker: kill -9 a node and restart it, or stop the cluster and start it
again on the same data dir, and every topic and message is there (tests/mbo_core/kafka/
test_cluster.py); a killed node's data is in the page cache and its logs are recovered at start.

    with LocalCluster(settings) as cluster:       # three nodes, booted in parallel
        cluster.bootstrap_servers                 # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
        cluster.kill(2)                           # kill -9 node 2
        cluster.restart(2)                        # same ports, same data

`python -m mbo_core.kafka.cluster --data-dir DIR` runs one in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import repeat
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from mbo_core.errors import MboError
from mbo_core.kafka import broker
from mbo_core.kafka.broker import NodeFiles
from mbo_core.kafka.probes import BROKER_HOST, free_port, kafka_ready, port_open
from mbo_core.settings import Settings

log = logging.getLogger("mbo.cluster")

#: The default size: the smallest cluster that keeps 2 in-sync replicas with one node dead.
SIZE = 3
#: Heap per node (MiB): Kafka keeps messages in the page cache, and three 1 GiB heaps (the
#: single broker's default) would only cost memory on a 24 GiB machine for nothing.
NODE_HEAP_MB = 384
#: Replication of every topic and of Kafka's internal ones, and writes refused below 2 copies.
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2
#: How fast a dead node is noticed. Measured (docs/cluster.md: 200k acks=all sends, kill -9
#: mid-stream, 2 cores): a node's partitions had new leaders 1.7-2.4 s after the kill, those of
#: the node that was also the active controller 2.9-4.1 s after (4.0-5.3 s with Kafka's quorum
#: timeouts; 2.5-3.3 s with 1.5 s sessions too, which leave less slack for a node starved of
#: CPU by its neighbours).
FAILURE_DETECTION: dict[str, object] = {
    # A node that misses heartbeats for this long is fenced: its partitions get new leaders
    # and it leaves every ISR, so that acks=all writes go on with two replicas. Kafka's 9 s
    # would be the stall of every producer; here a missed heartbeat means a dead process.
    "broker.session.timeout.ms": 2000,
    "broker.heartbeat.interval.ms": 500,
    # When the active controller dies, the others wait this long without news from it before
    # they elect another (Kafka: 2 s, then up to 1 s of randomised election timeout). The new
    # one then gives every broker a fresh session, so the dead one is fenced a session later.
    "controller.quorum.fetch.timeout.ms": 1000,
    "controller.quorum.election.timeout.ms": 500,
}
_POLL_S = 0.05
#: How long the nodes left after a majority stopped may take to stop themselves: the raft
#: leader waits up to 5 s for a successor before it exits (KafkaRaftClient's graceful shutdown),
#: so a clean stop of the cluster takes ~6 s however fast the rest is.
_AFTER_QUORUM_S = 10.0
_ACTIVE_CONTROLLER = re.compile(
    rb"\[QuorumController id=(\d+)\] Becoming the active controller at epoch (\d+)"
)
_PORT_ATTEMPTS = 3


class ClusterAlreadyRunningError(MboError):
    """A live node of this data dir's cluster was found; `state` says where they are."""

    def __init__(self, state: ClusterState) -> None:
        super().__init__(
            f"a local Kafka cluster is already running at {state.bootstrap_servers} "
            f"(pids {', '.join(str(node.pid) for node in state.nodes)})"
        )
        self.state = state


@dataclass(frozen=True)
class NodePorts:
    """One node's fixed identity: its node.id and its broker and controller ports."""

    node_id: int
    port: int
    controller_port: int


@dataclass(frozen=True)
class ClusterLayout:
    """What stays fixed for a data dir's cluster (cluster.json)."""

    cluster_id: str
    nodes: tuple[NodePorts, ...]

    def node(self, node_id: int) -> NodePorts:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise MboError(f"the local cluster has no node {node_id} (nodes: {self.node_ids})")

    @property
    def node_ids(self) -> list[int]:
        return [node.node_id for node in self.nodes]

    @property
    def voters(self) -> str:
        """controller.quorum.voters: every node votes (all are controllers)."""
        return ",".join(f"{n.node_id}@{BROKER_HOST}:{n.controller_port}" for n in self.nodes)


@dataclass(frozen=True)
class NodeState:
    """What the state file records about a started node."""

    node_id: int
    pid: int
    port: int
    controller_port: int
    config_file: str
    log_file: str
    started_at: float


@dataclass(frozen=True)
class ClusterState:
    nodes: tuple[NodeState, ...]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{BROKER_HOST}:{node.port}" for node in self.nodes)


def cluster_dir(settings: Settings) -> Path:
    return settings.data_dir / "kafka-cluster"


def node_files(settings: Settings, node_id: int) -> NodeFiles:
    return NodeFiles(cluster_dir(settings) / f"node-{node_id}")


def _layout_file(settings: Settings) -> Path:
    return cluster_dir(settings) / "cluster.json"


def state_file(settings: Settings) -> Path:
    return cluster_dir(settings) / "state.json"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise MboError(f"unreadable cluster file {path}: {exc}") from None
    if not isinstance(value, dict):
        raise MboError(f"unreadable cluster file {path}: not an object")
    return value


def read_layout(settings: Settings) -> ClusterLayout | None:
    """The data dir's cluster id and ports; None before its first start."""
    path = _layout_file(settings)
    value = _read(path)
    if value is None:
        return None
    try:
        nodes = tuple(NodePorts(**node) for node in value["nodes"])
        return ClusterLayout(cluster_id=value["cluster_id"], nodes=nodes)
    except (KeyError, TypeError) as exc:
        raise MboError(f"unreadable cluster file {path}: {exc}") from None


def read_state(settings: Settings) -> ClusterState | None:
    """The recorded nodes of this data dir's cluster, alive or not; None if none was recorded."""
    path = state_file(settings)
    value = _read(path)
    if value is None:
        return None
    try:
        return ClusterState(nodes=tuple(NodeState(**node) for node in value["nodes"]))
    except (KeyError, TypeError) as exc:
        raise MboError(f"unreadable cluster file {path}: {exc}") from None


def _write_state(settings: Settings, state: ClusterState) -> None:
    broker._write_json(state_file(settings), {"nodes": [asdict(node) for node in state.nodes]})


def node_properties(settings: Settings, layout: ClusterLayout, node_id: int) -> str:
    """One node's configuration: the single broker's KRaft node and 2-core tuning, with the
    replication and the failure detection of a cluster on top."""
    ports = layout.node(node_id)
    files = node_files(settings, node_id)
    node = broker.kraft_node_config(
        node_id, ports.port, ports.controller_port, layout.voters, files.storage
    )
    replication = {
        # Every partition on three nodes, and a write acknowledged (acks=all) only once two
        # of them have it: one node may die without losing an acknowledged message, and the
        # two left still take writes.
        "default.replication.factor": REPLICATION_FACTOR,
        "min.insync.replicas": MIN_INSYNC_REPLICAS,
        # Kafka's internal topics likewise (group offsets, producer transactions, share groups).
        "offsets.topic.replication.factor": REPLICATION_FACTOR,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": REPLICATION_FACTOR,
        "transaction.state.log.min.isr": MIN_INSYNC_REPLICAS,
        "transaction.state.log.num.partitions": 1,
        "share.coordinator.state.topic.replication.factor": REPLICATION_FACTOR,
        "share.coordinator.state.topic.min.isr": MIN_INSYNC_REPLICAS,
        # Never make a replica that is not in sync the leader: it would drop the messages it
        # lacks, acknowledged ones included. Kafka's default, spelled out because it is the point.
        "unclean.leader.election.enable": "false",
    }
    return broker.properties_text(
        {**node, **broker.local_node_tuning(), **replication, **FAILURE_DETECTION}
    )


def _pick_ports(recorded: Iterable[int | None]) -> list[int]:
    """A port for each slot: the recorded one while it is free, else a free one; all distinct."""
    chosen: list[int] = []
    for port in recorded:
        candidate = port if port and not port_open(BROKER_HOST, port) else free_port()
        while candidate in chosen:
            candidate = free_port()
        chosen.append(candidate)
    return chosen


def _layout(settings: Settings, size: int, *, new_ports: bool) -> ClusterLayout:
    """The recorded layout, with a new free port for any recorded one that is taken (every
    node starts together, so a changed voter port is seen by all); a new one the first time."""
    recorded = read_layout(settings)
    if recorded is not None and len(recorded.nodes) != size:
        raise MboError(
            f"the local cluster in {cluster_dir(settings)} has {len(recorded.nodes)} nodes, not "
            f"{size}: start it with size={len(recorded.nodes)}, or fresh=True to make a new one"
        )
    old: list[int | None] = [None] * (2 * size)
    if recorded is not None and not new_ports:
        old = [p for n in recorded.nodes for p in (n.port, n.controller_port)]
    ports = _pick_ports(old)
    layout = ClusterLayout(
        cluster_id=recorded.cluster_id if recorded else broker.new_cluster_id(),
        nodes=tuple(
            NodePorts(node_id=i + 1, port=ports[2 * i], controller_port=ports[2 * i + 1])
            for i in range(size)
        ),
    )
    if layout != recorded:
        broker._write_json(
            _layout_file(settings),
            {"cluster_id": layout.cluster_id, "nodes": [asdict(n) for n in layout.nodes]},
        )
    return layout


def _prepare_node(settings: Settings, layout: ClusterLayout, node_id: int) -> None:
    """The node's server.properties and log4j2.properties, its storage formatted on first use."""
    files = node_files(settings, node_id)
    files.logs.mkdir(parents=True, exist_ok=True)
    files.config.write_text(node_properties(settings, layout, node_id))
    files.log4j2.write_text(broker.log4j2_config(files.server_log))
    broker.format_storage(settings, files, node_id, layout.cluster_id)


class LocalCluster:
    """A local Kafka cluster of `size` combined KRaft nodes (node ids 1..size) as child
    processes for the duration of a `with` block.

    Stopped on exit, on error too (SIGTERM, SIGKILL after MBO_BROKER__STOP_TIMEOUT_S), and
    (Linux) killed if this process dies first. `kill(i)` and `restart(i)` are for fault tests;
    `restart_if_exited` starts again, on their ports and data, the nodes that died meanwhile.
    """

    def __init__(
        self,
        settings: Settings,
        size: int = SIZE,
        *,
        fresh: bool = False,
        heap_mb: int = NODE_HEAP_MB,
    ) -> None:
        """fresh=True: delete the cluster's storage (topics, messages, offsets) and ports first."""
        if size < REPLICATION_FACTOR:
            raise MboError(f"a local cluster needs {REPLICATION_FACTOR} nodes at least, not {size}")
        self._settings = settings
        self._size = size
        self._fresh = fresh
        self._heap = (f"{heap_mb}m", f"{heap_mb}m")
        self._layout: ClusterLayout | None = None
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._states: dict[int, NodeState] = {}
        # Where each node's server.log stood when it was last started: what it logged before
        # (an earlier run, a cluster since deleted with fresh=True) says nothing about now.
        self._log_starts: dict[int, int] = {}
        #: Nodes started again by restart_if_exited (not by restart).
        self.restarts = 0

    # --- what it is -------------------------------------------------------------------------

    @property
    def layout(self) -> ClusterLayout:
        if self._layout is None:
            raise MboError("the local cluster is not running")
        return self._layout

    @property
    def node_ids(self) -> list[int]:
        return self.layout.node_ids

    @property
    def bootstrap_servers(self) -> str:
        """Every node's address, so that a client finds the cluster with any node down."""
        return ",".join(f"{BROKER_HOST}:{node.port}" for node in self.layout.nodes)

    def address(self, node_id: int) -> str:
        return f"{BROKER_HOST}:{self.layout.node(node_id).port}"

    @property
    def pids(self) -> dict[int, int]:
        """node id: pid of every node that is running (not a killed or exited one)."""
        return {i: p.pid for i, p in self._processes.items() if p.poll() is None}

    def exit_code(self, node_id: int) -> int | None:
        """The node's exit code if it has died (reaped, so no zombie stays), else None."""
        process = self._processes.get(node_id)
        return None if process is None else process.poll()

    def log_file(self, node_id: int) -> Path:
        return node_files(self._settings, node_id).server_log

    def active_controller(self) -> int | None:
        """The node that is the active controller (the KRaft quorum's leader), if it runs: the
        one that became active at the highest epoch, read from the nodes' logs. Clients cannot
        ask: aiokafka has no DescribeQuorum, and in KRaft a Metadata response names a random
        broker as the controller."""
        epochs: dict[int, int] = {}
        for node_id in self.pids:
            with contextlib.suppress(OSError), self.log_file(node_id).open("rb") as logged:
                start = self._log_starts.get(node_id, 0)
                logged.seek(start if start <= self.log_file(node_id).stat().st_size else 0)
                for match in _ACTIVE_CONTROLLER.finditer(logged.read()):
                    epochs[int(match[2])] = int(match[1])
        if not epochs:
            return None
        return epochs[max(epochs)]

    # --- start ------------------------------------------------------------------------------

    def start(self) -> ClusterState:
        """Boot every node in parallel and wait until each serves clients."""
        settings = self._settings
        with broker._locked_dir(cluster_dir(settings)):
            recorded = read_state(settings)
            if recorded is not None:
                if any(broker._is_our_process(n.pid, n.config_file) for n in recorded.nodes):
                    raise ClusterAlreadyRunningError(recorded)
                state_file(settings).unlink(missing_ok=True)  # stale: its data is still there
            if self._fresh:
                # Only here, under the lock and with no live node: never a running node's data.
                for node_id in range(1, self._size + 1):
                    shutil.rmtree(node_files(settings, node_id).storage, ignore_errors=True)
                _layout_file(settings).unlink(missing_ok=True)
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                started = time.monotonic()
                layout = _layout(settings, self._size, new_ports=attempt > 1)
                # The storage tool (without a template) is a JVM per node: format in parallel.
                with ThreadPoolExecutor(max_workers=self._size) as pool:
                    nodes = layout.node_ids
                    list(pool.map(_prepare_node, repeat(settings), repeat(layout), nodes))
                self._layout = layout
                for node_id in layout.node_ids:
                    self._spawn(node_id)
                failed = self._wait_ready(layout.node_ids)
                if failed is None:
                    _write_state(settings, self._state())
                    log.info(
                        "Kafka cluster of %d ready on %s in %.1f s (pids %s, data %s)",
                        self._size,
                        self.bootstrap_servers,
                        time.monotonic() - started,
                        self.pids,
                        cluster_dir(settings),
                    )
                    return self._state()
                # A node that died at start most likely lost its port to another process
                # between our pick and its bind: stop the others, try again on new ports.
                node_id, code = failed
                reason = self._failure(node_id, code)
                self._terminate_all(timeout_s=5.0)
                if attempt == _PORT_ATTEMPTS:
                    self._layout = None
                    raise MboError(reason)
                log.warning("%s; starting the cluster again on new ports", reason)
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, node_id: int) -> None:
        files = node_files(self._settings, node_id)
        ports = self.layout.node(node_id)
        try:
            self._log_starts[node_id] = files.server_log.stat().st_size
        except FileNotFoundError:
            self._log_starts[node_id] = 0
        with files.stdout_log.open("ab") as out:
            out.write(f"--- mbo: starting Kafka node {node_id} on port {ports.port}\n".encode())
            out.flush()
            process = broker._spawn(self._settings, out, detach=False, files=files, heap=self._heap)
        self._processes[node_id] = process
        self._states[node_id] = NodeState(
            node_id=node_id,
            pid=process.pid,
            port=ports.port,
            controller_port=ports.controller_port,
            config_file=str(files.config),
            log_file=str(files.server_log),
            started_at=time.time(),
        )

    def _wait_ready(self, node_ids: list[int]) -> tuple[int, int] | None:
        """None once every node in node_ids serves clients; (node, exit code) of one that died
        first. A node serves once a quorum of controllers elected a leader and unfenced it, so
        the nodes are waited for together, not one after the other."""
        timeout_s = self._settings.broker.start_timeout_s
        deadline = time.monotonic() + timeout_s
        pending = list(node_ids)
        while pending:
            for node_id in list(pending):
                code = self._processes[node_id].poll()
                if code is not None:
                    return node_id, code
                if kafka_ready(BROKER_HOST, self.layout.node(node_id).port, timeout_s=1.0):
                    pending.remove(node_id)
            if pending:
                if time.monotonic() > deadline:
                    for node_id in node_ids:
                        broker._terminate(self._processes[node_id], timeout_s=5.0)
                    raise MboError(
                        f"Kafka node(s) {pending} of the local cluster did not answer in "
                        f"{timeout_s:g} s (logs: {cluster_dir(self._settings)}/node-*/logs)"
                    )
                time.sleep(_POLL_S)
        return None

    def _failure(self, node_id: int, code: int) -> str:
        files = node_files(self._settings, node_id)
        tail = broker._log_tail(files.server_log) or broker._log_tail(files.stdout_log)
        return (
            f"Kafka node {node_id} of the local cluster exited with code {code} at start: "
            f"{tail} (logs: {files.logs})"
        )

    def _state(self) -> ClusterState:
        return ClusterState(nodes=tuple(self._states[i] for i in sorted(self._states)))

    # --- faults -----------------------------------------------------------------------------

    def kill(self, node_id: int, signum: signal.Signals = signal.SIGKILL) -> None:
        """Send the node `signum` (kill -9 by default); SIGKILL also waits until it is dead,
        so that its ports are free and `pids` no longer lists it."""
        process = self._processes.get(node_id)
        if process is None:
            raise MboError(f"node {node_id} of the local cluster was never started")
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
        if signum == signal.SIGKILL:
            process.wait(timeout=10)

    def restart(self, node_id: int) -> NodeState:
        """Start the node again on its ports and data (a live one is stopped first, cleanly),
        and wait until it serves clients; it then catches up and rejoins the ISRs by itself."""
        process = self._processes.get(node_id)
        layout = self.layout  # raises if the cluster is not running
        with broker._locked_dir(cluster_dir(self._settings)):
            if process is not None:
                broker._terminate(process, timeout_s=self._settings.broker.stop_timeout_s)
            started = time.monotonic()
            # Rewritten, not reused: the settings' tuning may have changed since the boot.
            _prepare_node(self._settings, layout, node_id)
            self._spawn(node_id)
            failed = self._wait_ready([node_id])
            if failed is not None:
                raise MboError(self._failure(*failed))
            _write_state(self._settings, self._state())
        log.info(
            "Kafka node %d ready again on %s in %.1f s (pid %d)",
            node_id,
            self.address(node_id),
            time.monotonic() - started,
            self._states[node_id].pid,
        )
        return self._states[node_id]

    def restart_if_exited(self) -> bool:
        """Start again, on their ports and data, the nodes that died; True if any did.

        Clients keep their bootstrap address (every node's) and reconnect by themselves.
        """
        exited = {i: code for i in self._processes if (code := self.exit_code(i)) is not None}
        for node_id, code in exited.items():
            log.warning(
                "Kafka node %d (pid %d) exited with code %d: restarting it",
                node_id,
                self._states[node_id].pid,
                code,
            )
            self.restart(node_id)
            self.restarts += 1
        return bool(exited)

    # --- stop -------------------------------------------------------------------------------

    def _terminate_all(self, timeout_s: float) -> None:
        """SIGTERM to every node at once, SIGKILL to those still there after timeout_s, or
        _AFTER_QUORUM_S after fewer than a majority of the nodes were left.

        At once, so that each broker's controlled shutdown (the controller's approval, which
        moves its partitions' leadership away) is asked while the controllers are still a
        quorum: a broker whose approval is not committed before the quorum is gone waits for it
        until its own 5 min deadline: one stop in ~30 on a loaded machine needed the SIGKILL
        after 30 s, most likely so. The nodes left without a quorum get the raft leader's
        resignation wait and some margin instead."""
        processes = [p for p in self._processes.values() if p.poll() is None]
        for process in processes:
            process.terminate()
        started = time.monotonic()
        majority = self._size // 2 + 1
        quorum_gone_at: float | None = None
        while alive := [p for p in processes if p.poll() is None]:
            now = time.monotonic()
            if len(alive) < majority and quorum_gone_at is None:
                quorum_gone_at = now
            late = quorum_gone_at is not None and now - quorum_gone_at > _AFTER_QUORUM_S
            if late or now - started > timeout_s:
                stuck = sorted(i for i, p in self._processes.items() if p in alive)
                log.warning(
                    "Kafka node(s) %s of the local cluster still there %.0f s after SIGTERM%s: "
                    "SIGKILL (their logs are recovered at the next start; nothing is lost)",
                    stuck,
                    now - started,
                    " and without a controller quorum" if late else "",
                )
                for process in alive:
                    process.kill()
                    process.wait()
                break
            time.sleep(_POLL_S)
        log.debug("Kafka cluster stopped in %.1f s", time.monotonic() - started)
        self._processes.clear()
        self._states.clear()

    def stop(self) -> None:
        if not self._processes:
            return
        settings = self._settings
        with broker._locked_dir(cluster_dir(settings)):
            state = self._state()
            self._terminate_all(timeout_s=settings.broker.stop_timeout_s)
            if read_state(settings) == state:  # only our own record
                state_file(settings).unlink(missing_ok=True)
        self._layout = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a local cluster in the foreground until Ctrl-C (or SIGTERM), printing its address."""
    parser = argparse.ArgumentParser(
        prog="python -m mbo_core.kafka.cluster", description=main.__doc__
    )
    parser.add_argument("--data-dir", type=Path, help="default: MBO_DATA_DIR's")
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--fresh", action="store_true", help="delete its topics and data first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from mbo_core.settings import load_settings  # noqa: PLC0415

    settings = load_settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    # SIGTERM ends the block like Ctrl-C, so that the nodes are stopped, not orphaned.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with LocalCluster(settings, args.size, fresh=args.fresh) as cluster:
        print(f"export MBO_KAFKA__BOOTSTRAP_SERVERS={cluster.bootstrap_servers}", flush=True)
        print(f"export MBO_TOPICS__REPLICATION_FACTOR={REPLICATION_FACTOR}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1.0)
                cluster.restart_if_exited()
    return 0


if __name__ == "__main__":
    sys.exit(main())
