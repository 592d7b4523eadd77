"""The local Apache Kafka broker: start, serve, record state, stop with nothing left, and keep
every topic, message and committed offset across a stop, a kill -9 and a restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mbo_core.errors import MboError
from mbo_core.kafka import broker, clients, probes
from mbo_core.kafka.topics import TopicSpec, ensure_topics
from mbo_core.settings import Settings
from tests.api.pipeline import wait_until
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(data_dir=tmp_path / "data")


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _assert_gone(state: broker.BrokerState) -> None:
    assert not probes.port_open(state.host, state.port), "the port still accepts connections"
    assert not _pid_alive(state.pid), "the broker process is still alive"


def test_local_broker_context_starts_answers_and_stops(settings: Settings) -> None:
    with broker.LocalBroker(settings) as local:
        state = local.state
        assert state.host == "127.0.0.1"
        assert probes.kafka_answers(state.host, state.port)
        assert broker.broker_status(settings).running
        recorded = json.loads(broker.state_file(settings).read_text())
        assert (recorded["pid"], recorded["port"]) == (state.pid, state.port)
        # dev settings without MBO_KAFKA__BOOTSTRAP_SERVERS find the local broker.
        assert clients.bootstrap_servers(settings) == local.bootstrap_servers
    _assert_gone(state)
    assert not broker.state_file(settings).exists()
    assert broker.broker_status(settings).state is None


def test_local_broker_stops_when_the_block_fails(settings: Settings) -> None:
    with pytest.raises(RuntimeError), broker.LocalBroker(settings) as local:
        state = local.state
        raise RuntimeError("test body failed")
    _assert_gone(state)


def test_detached_broker_is_stopped_by_stop_broker(settings: Settings) -> None:
    state = broker.start_broker(settings, detach=True)
    try:
        assert broker.broker_status(settings).running
        with pytest.raises(broker.BrokerAlreadyRunningError) as already:
            broker.start_broker(settings, detach=True)
        assert already.value.state == state
        assert str(state.port) in str(already.value)
    finally:
        stopped = broker.stop_broker(settings)
    assert stopped == state
    _assert_gone(state)
    assert broker.stop_broker(settings) is None  # idempotent


def test_stale_state_is_reported_and_replaced(settings: Settings) -> None:
    with broker.LocalBroker(settings) as first:
        stale = first.state
    broker.state_file(settings).parent.mkdir(parents=True, exist_ok=True)
    broker.state_file(settings).write_text(json.dumps(stale.__dict__))
    status = broker.broker_status(settings)
    assert status.state == stale
    assert not status.process_alive
    assert not status.running
    with broker.LocalBroker(settings) as second:
        assert second.state.pid != stale.pid
        assert broker.broker_status(settings).running


def test_fixed_port_in_use_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(data_dir=tmp_path, broker={"port": port})
        with pytest.raises(MboError, match=f"MBO_BROKER__PORT={port}"):
            broker.start_broker(settings, detach=False)
    assert not broker.state_file(settings).exists()


def test_fixed_port_is_used(tmp_path: Path) -> None:
    port = probes.free_port()
    with broker.LocalBroker(make_settings(data_dir=tmp_path, broker={"port": port})) as local:
        assert local.bootstrap_servers == f"127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("storage_template", "failure"),
    [
        (True, r"exited with code 3 at start: java: cannot start"),
        # Without a template the storage tool's JVM formats the new data dir, and fails first.
        (False, r"storage .* failed: java: cannot start"),
    ],
)
def test_broker_that_cannot_start_is_reported(
    tmp_path: Path, storage_template: bool, failure: str
) -> None:
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'java: cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    libs = _linked_libs(tmp_path)
    if storage_template:
        installed = broker.storage_template(make_settings(data_dir=tmp_path / "probe"))
        (libs.parent / installed.name).write_bytes(installed.read_bytes())
    settings = make_settings(
        data_dir=tmp_path / "data", broker={"java": str(fake), "kafka_libs": str(libs)}
    )
    with pytest.raises(MboError, match=failure):
        broker.start_broker(settings, detach=False)
    assert not broker.state_file(settings).exists()


def test_missing_kafka_install_says_how_to_get_it(tmp_path: Path) -> None:
    settings = make_settings(data_dir=tmp_path / "data", broker={"kafka_libs": str(tmp_path)})
    with pytest.raises(MboError, match=r"Apache Kafka is not installed in .*make setup"):
        broker.start_broker(settings, detach=False)


def test_kafka_probe_rejects_a_non_kafka_server() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer_garbage() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(64)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer_garbage)
        thread.start()
        assert not probes.kafka_answers("127.0.0.1", port, timeout_s=2.0)
        thread.join(timeout=5)
    assert not probes.kafka_answers("127.0.0.1", port)


def test_bootstrap_servers_without_broker_or_setting_says_what_to_do(settings: Settings) -> None:
    with pytest.raises(MboError, match="mbo infra up"):
        clients.bootstrap_servers(settings)


def _state_of_other_process(settings: Settings, pid: int) -> broker.BrokerState:
    """A broker state naming `pid`, a live process that is not a broker on this config file."""
    return broker.BrokerState(
        pid=pid,
        host="127.0.0.1",
        port=probes.free_port(),
        controller_port=probes.free_port(),
        config_file=str(settings.data_dir / "kafka" / "server.properties"),
        log_file="",
        started_at=0.0,
    )


def test_state_file_of_a_recycled_pid_is_not_trusted(settings: Settings) -> None:
    # Our own pid is alive but is not a broker started with that config file.
    fake = _state_of_other_process(settings, os.getpid())
    broker.state_file(settings).parent.mkdir(parents=True)
    broker.state_file(settings).write_text(json.dumps(fake.__dict__))
    assert not broker.broker_status(settings).process_alive
    assert broker.stop_broker(settings) == fake  # removes the record, signals nobody
    assert not broker.state_file(settings).exists()


def test_stop_waits_for_the_process_itself_not_its_command_line(settings: Settings) -> None:
    # An exiting JVM drops its command line before it is a zombie; stopping once the command
    # line no longer matched returned while the broker still ran. This process never matches,
    # and the wait still follows it by its start time until it has exited.
    exiting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"])
    try:
        state = _state_of_other_process(settings, exiting.pid)
        started = broker._proc_start_time(exiting.pid)
        assert started is not None and not broker._is_our_broker(state)
        assert broker._wait_gone(state, started, timeout_s=10.0)
        assert not _pid_alive(exiting.pid)
    finally:
        exiting.kill()
        exiting.wait()


MESSAGES = 200


async def _produce(settings: Settings, topic: str, first: int, count: int) -> None:
    producer = clients.make_producer(settings, "test-durable")
    await producer.start()
    try:
        for index in range(first, first + count):
            await producer.send(topic, key=str(index % 3).encode(), value=b"m%d" % index)
        await producer.flush()
    finally:
        await producer.stop()


async def _consume_all(settings: Settings, topic: str, group: str, *, commit: bool) -> list[bytes]:
    """Every message of `topic` from the group's committed offsets (earliest without), the
    group's commits optionally moved to the end."""
    consumer = clients.make_consumer(settings, "test-durable", topic, group_id=group)
    await consumer.start()
    values: list[bytes] = []
    try:
        ends = await clients.partition_ends(settings, topic)

        async def caught_up() -> bool:
            assigned = consumer.assignment()
            for tp in assigned:
                if await consumer.position(tp) < ends[tp.partition]:
                    return False
            return len(assigned) == len(ends)

        deadline = time.monotonic() + 30
        while not await caught_up():
            assert time.monotonic() < deadline, f"read {len(values)} messages"
            batches = await consumer.getmany(timeout_ms=500)
            values.extend(m.value for messages in batches.values() for m in messages if m.value)
        if commit:
            await consumer.commit()
    finally:
        await consumer.stop()
    return values


def test_topics_messages_and_offsets_survive_stop_and_kill_9(settings: Settings) -> None:
    topic, group = "durable", "durable-group"
    with broker.LocalBroker(settings) as local:
        first_port = local.state.port
        on_broker = make_settings(
            data_dir=settings.data_dir, kafka={"bootstrap_servers": local.bootstrap_servers}
        )
        asyncio.run(ensure_topics(on_broker, [TopicSpec(topic, 3, 1)]))
        asyncio.run(_produce(on_broker, topic, 0, MESSAGES // 2))
        read = asyncio.run(_consume_all(on_broker, topic, group, commit=True))
        assert sorted(read) == sorted(b"m%d" % i for i in range(MESSAGES // 2))
    # A clean stop, then a start on the same data dir: same port, same data.
    with broker.LocalBroker(settings) as local:
        assert local.state.port == first_port
        asyncio.run(_produce(on_broker, topic, MESSAGES // 2, MESSAGES // 2))
        old_pid = local.state.pid
        os.kill(old_pid, signal.SIGKILL)
        wait_until(lambda: local.exit_code() is not None, 10, "the killed broker's exit")
        assert local.restart_if_exited()
        assert local.restarts == 1 and local.state.pid != old_pid
        assert local.state.port == first_port
        assert not local.restart_if_exited()  # alive: nothing to do
        ends = asyncio.run(clients.partition_ends(on_broker, topic))
        assert sum(ends.values()) == MESSAGES
        # The group resumes at its committed offsets: only the second half is new to it.
        resumed = asyncio.run(_consume_all(on_broker, topic, group, commit=False))
        assert sorted(resumed) == sorted(b"m%d" % i for i in range(MESSAGES // 2, MESSAGES))
        # And everything is there for a reader from the start.
        everything = asyncio.run(_consume_all(on_broker, topic, "another-group", commit=False))
        assert sorted(everything) == sorted(b"m%d" % i for i in range(MESSAGES))
        restarted = local.state
    _assert_gone(restarted)


def test_cluster_ids_are_kafka_uuids_that_no_command_line_mistakes_for_an_option() -> None:
    ids = {broker.new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_class_archive_is_recorded_and_mapped_by_every_later_start(tmp_path: Path) -> None:
    # A copy of the installed jars (links), so the archive recorded here is this test's own.
    libs = _linked_libs(tmp_path)
    settings = make_settings(data_dir=tmp_path / "data", broker={"kafka_libs": str(libs)})
    assert not broker.class_archive(settings).exists()
    assert not broker.storage_template(settings).exists()
    assert not any("SharedArchiveFile" in flag for flag in _broker_command(settings))

    archive = broker.build_class_archive(settings)
    assert archive == tmp_path / "kafka" / broker.CLASS_ARCHIVE
    assert archive.stat().st_size > 10 << 20
    assert list(archive.parent.glob("*.partial")) == []
    assert f"-XX:SharedArchiveFile={archive}" in _broker_command(settings)
    # Recorded while serving clients (mbo_core/kafka/archive_traffic.py): the classes of a
    # consumer group's member are in it, which a broker that only booted never loads.
    assert b"ClassicGroupMember" in archive.read_bytes()
    # The storage tool's bootstrap metadata of the scratch broker is kept as the template.
    template = broker.storage_template(settings)
    assert template.name == f"bootstrap-{broker.kafka_version(settings)}.checkpoint"
    assert b"metadata.version" in template.read_bytes()
    with broker.LocalBroker(settings) as local:
        # The JVM maps an archive it accepted (a refused one it would only have read).
        assert str(archive) in Path(f"/proc/{local.state.pid}/maps").read_text()
        assert probes.kafka_answers(local.state.host, local.state.port)
    # That data dir was formatted from the template, the way the storage tool does it, and
    # Kafka took it: it served above, and kept the ids written for it.
    storage = broker.storage_dir(settings)
    assert (storage / "bootstrap.checkpoint").read_bytes() == template.read_bytes()
    meta = dict(
        line.split("=", 1)
        for line in (storage / "meta.properties").read_text().splitlines()
        if "=" in line
    )
    assert meta["version"] == "1"
    assert meta["node.id"] == str(broker.NODE_ID)
    assert (
        meta["cluster.id"]
        == json.loads((broker.broker_dir(settings) / "cluster.json").read_text())["cluster_id"]
    )
    assert len(meta["directory.id"]) == 22


def test_extra_jvm_options_come_after_the_projects_own(tmp_path: Path) -> None:
    settings = make_settings(
        data_dir=tmp_path, broker={"jvm_options": " -XX:+AlwaysPreTouch  -Dmbo.probe=1 "}
    )
    command = _broker_command(settings)
    extra = command.index("-XX:+AlwaysPreTouch")
    assert command[extra + 1] == "-Dmbo.probe=1"
    assert command.index("-XX:TieredStopAtLevel=1") < extra < command.index("kafka.Kafka")


def _linked_libs(tmp_path: Path) -> Path:
    """tmp_path/kafka/libs: links to the installed Kafka's jars, without its archive and
    storage template (which sit beside the installed libs)."""
    libs = tmp_path / "kafka" / "libs"
    libs.mkdir(parents=True)
    for jar in broker.kafka_libs(make_settings(data_dir=tmp_path / "probe")).glob("*.jar"):
        (libs / jar.name).symlink_to(jar)
    return libs


def _broker_command(settings: Settings) -> list[str]:
    return broker._jvm_command(settings, "kafka.Kafka", "server.properties")
