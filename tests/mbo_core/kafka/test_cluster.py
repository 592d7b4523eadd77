"""The local three-node Kafka cluster: a node killed with -9 in the middle of an acks=all,
idempotent stream loses nothing, duplicates nothing, stalls the producer only for the leader
election, and rejoins every ISR once restarted (issue 20, item 7)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from mbo_core.kafka import clients
from mbo_core.kafka.cluster import (
    MIN_INSYNC_REPLICAS,
    REPLICATION_FACTOR,
    ClusterAlreadyRunningError,
    LocalCluster,
    node_files,
    read_layout,
    read_state,
    state_file,
)
from mbo_core.kafka.topics import ensure_topics
from mbo_core.settings import Settings
from tests.api.pipeline import wait_until
from tests.conftest import make_settings

pytestmark = pytest.mark.integration

TOPIC = "cluster.records"
PARTITIONS = 8
MESSAGES = 200_000
KEYS = 64
#: Sends not yet acknowledged at most, as a replay that keeps pace with the cluster has: without
#: a bound aiokafka queues the whole stream in its batches before the first acknowledgement.
IN_FLIGHT = 5_000
#: The producer's longest wait for an acknowledgement that the test accepts; measured ~3 s.
STALL_BOUND_S = 30.0


@dataclass(frozen=True)
class PartitionInfo:
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


async def _partitions(settings: Settings) -> dict[int, PartitionInfo]:
    admin = clients.make_admin(settings, "test-cluster")
    await admin.start()
    try:
        (described,) = await admin.describe_topics([TOPIC])
    finally:
        await admin.close()
    return {
        p["partition"]: PartitionInfo(p["leader"], tuple(p["replicas"]), tuple(p["isr"]))
        for p in described["partitions"]
    }


async def _topic_config(settings: Settings, name: str) -> str:
    admin = clients.make_admin(settings, "test-cluster")
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, TOPIC, {name: None})]
        )
    finally:
        await admin.close()
    ((_error, _message, _type, _topic, entries),) = response.resources
    return str(next(entry[1] for entry in entries if entry[0] == name))


@dataclass
class Replay:
    """What the producer saw: when each send was acknowledged, and what was refused."""

    sent: int = 0
    acked_at: list[float] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    killed_at: float = 0.0
    #: When every partition had a leader again, none of them the killed node.
    elected_at: float = 0.0

    def longest_gap(self) -> tuple[float, float]:
        """(seconds, when it started) of the longest wait between two acknowledgements."""
        times = sorted(self.acked_at)
        gaps = [(later - earlier, earlier) for earlier, later in itertools.pairwise(times)]
        return max(gaps)


async def _watch_election(settings: Settings, victim: int, replay: Replay) -> None:
    """Poll the metadata after the kill until no partition is led by the victim or leaderless."""
    admin = clients.make_admin(settings, "test-cluster-watch")
    await admin.start()
    try:
        while True:
            with contextlib.suppress(KafkaError):
                (described,) = await admin.describe_topics([TOPIC])
                leaders = {p["leader"] for p in described["partitions"]}
                if leaders and not leaders & {victim, -1}:
                    replay.elected_at = time.monotonic()
                    return
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def _produce_and_kill(settings: Settings, cluster: LocalCluster, victim: int) -> Replay:
    """MESSAGES keyed messages, value `key:sequence`; kill -9 `victim` once a third of them are
    acknowledged, and keep sending."""
    replay = Replay()
    producer = clients.make_producer(settings, "test-cluster")
    await producer.start()
    watch: asyncio.Task[None] | None = None

    progress = asyncio.Event()

    def acked(future: asyncio.Future[object]) -> None:
        if future.exception() is not None:
            replay.errors.append(future.exception())  # type: ignore[arg-type]
        else:
            replay.acked_at.append(time.monotonic())
        progress.set()

    try:
        sequences = [0] * KEYS
        for index in range(MESSAGES):
            key = index % KEYS
            value = b"%d:%d" % (key, sequences[key])
            sequences[key] += 1
            while replay.sent - len(replay.acked_at) - len(replay.errors) >= IN_FLIGHT:
                progress.clear()
                await progress.wait()
            future = await producer.send(TOPIC, key=b"k%02d" % key, value=value)
            future.add_done_callback(acked)
            replay.sent += 1
            if watch is None and len(replay.acked_at) >= MESSAGES // 3:
                cluster.kill(victim, signal.SIGKILL)
                replay.killed_at = time.monotonic()
                watch = asyncio.create_task(_watch_election(settings, victim, replay))
        await producer.flush()
        assert watch is not None, "the stream ended before the kill"
        await asyncio.wait_for(watch, timeout=STALL_BOUND_S)
    finally:
        if watch is not None:
            watch.cancel()
        await producer.stop()
    return replay


async def _consume_everything(settings: Settings) -> list[bytes]:
    consumer = clients.make_consumer(settings, "test-cluster", group_id=None)
    await consumer.start()
    values: list[bytes] = []
    try:
        partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + 60
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            assert time.monotonic() < deadline, f"read {len(values)} of {sum(ends.values())}"
            batches = await consumer.getmany(timeout_ms=500, max_records=50_000)
            values.extend(m.value for messages in batches.values() for m in messages if m.value)
    finally:
        await consumer.stop()
    return values


def _node_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_node_killed_mid_stream_loses_nothing_and_stalls_only_for_the_election(
    tmp_path: Path,
) -> None:
    settings = make_settings(data_dir=tmp_path / "data")
    began = time.monotonic()
    with LocalCluster(settings) as cluster:
        booted = time.monotonic() - began
        assert len(cluster.pids) == 3
        assert len(set(cluster.bootstrap_servers.split(","))) == 3
        layout = read_layout(settings)
        assert (
            layout is not None
            and len({p for n in layout.nodes for p in (n.port, n.controller_port)}) == 6
        )
        recorded = read_state(settings)
        assert recorded is not None and recorded.bootstrap_servers == cluster.bootstrap_servers
        boot_cpu = {i: _node_cpu_s(pid) for i, pid in cluster.pids.items()}
        with pytest.raises(ClusterAlreadyRunningError):
            LocalCluster(settings).start()

        # A stage's settings pointed at the cluster: every address, replication factor 3.
        on_cluster = make_settings(
            data_dir=settings.data_dir,
            kafka={"bootstrap_servers": cluster.bootstrap_servers},
            topics={
                "replication_factor": REPLICATION_FACTOR,
                "records": {"name": TOPIC, "partitions": PARTITIONS},
                "bbo": {"name": "cluster.bbo"},
                "snapshots": {"name": "cluster.snapshots"},
                "dead_letter": {"name": "cluster.dead-letter"},
            },
        )
        options = clients.producer_kwargs(on_cluster, "test-cluster")
        assert (options["acks"], options["enable_idempotence"]) == ("all", True)
        assert TOPIC in asyncio.run(ensure_topics(on_cluster))
        before = asyncio.run(_partitions(on_cluster))
        assert len(before) == PARTITIONS
        assert all(len(p.replicas) == 3 and len(p.isr) == 3 for p in before.values())
        assert asyncio.run(_topic_config(on_cluster, "min.insync.replicas")) == str(
            MIN_INSYNC_REPLICAS
        )

        # The harsh case: the node that leads the most partitions, the active controller
        # among those that lead as many.
        led = Counter(p.leader for p in before.values())
        controller = cluster.active_controller()
        victim = max(led, key=lambda node: (led[node], node == controller))
        replay = asyncio.run(_produce_and_kill(on_cluster, cluster, victim))
        gap, gap_start = replay.longest_gap()
        print(
            f"\ncluster of 3 booted in {booted:.1f} s ({sum(boot_cpu.values()):.1f} CPU-s: "
            f"{boot_cpu}); killed node {victim} (led {led[victim]} of {PARTITIONS} partitions, "
            f"{'the' if victim == controller else 'not the'} active controller) after "
            f"{MESSAGES // 3} acks; new leaders {replay.elected_at - replay.killed_at:.2f} s "
            f"after the kill; longest wait between acks {gap:.2f} s (from "
            f"{gap_start - replay.killed_at:+.2f} s after the kill)"
        )
        assert replay.errors == []
        assert len(replay.acked_at) == replay.sent == MESSAGES
        assert gap < STALL_BOUND_S

        # Everything, once, in order per key, read while the killed node is still down.
        values = asyncio.run(_consume_everything(on_cluster))
        per_key: dict[int, list[int]] = defaultdict(list)
        for value in values:
            key, sequence = value.split(b":")
            per_key[int(key)].append(int(sequence))
        assert len(values) == MESSAGES
        expected = MESSAGES // KEYS
        assert {key: seqs for key, seqs in per_key.items() if seqs != list(range(expected))} == {}
        assert sorted(per_key) == list(range(KEYS))

        after_kill = asyncio.run(_partitions(on_cluster))
        assert all(victim not in p.isr and len(p.isr) == 2 for p in after_kill.values())
        assert victim not in cluster.pids

        # Back on its ports and data, it catches up and every ISR has three replicas again.
        restarted_at = time.monotonic()
        cluster.restart(victim)
        assert set(cluster.pids) == {1, 2, 3}
        wait_until(
            lambda: all(len(p.isr) == 3 for p in asyncio.run(_partitions(on_cluster)).values()),
            30,
            "the restarted node rejoining every ISR",
        )
        rejoined = time.monotonic() - restarted_at
        print(f"node {victim} back in every ISR {rejoined:.1f} s after its restart began")
        assert read_state(settings) is not None
        addresses = cluster.bootstrap_servers
        stopping = time.monotonic()
    stopped = time.monotonic() - stopping
    assert not state_file(settings).exists()
    assert cluster.pids == {}
    # SIGTERM to all at once: ~6 s (the last raft leader waits 5 s for a successor), never the
    # 30 s of MBO_BROKER__STOP_TIMEOUT_S.
    assert stopped < 20
    clean = [
        i for i in (1, 2, 3) if (node_files(settings, i).storage / ".kafka_cleanshutdown").exists()
    ]

    # Durable: the whole cluster started again on its data dir is where it was, with every
    # message.
    with LocalCluster(settings) as again:
        assert again.bootstrap_servers == addresses
        assert sum(asyncio.run(clients.partition_ends(on_cluster, TOPIC)).values()) == MESSAGES
    print(f"cluster stopped in {stopped:.1f} s, nodes {clean} with a clean shutdown marker")
