"""Shared fixtures: a real Kafka broker and a real ClickHouse engine for integration tests.

Backends, picked once per session, in this order:
1. external servers: KAFKA_BOOTSTRAP_SERVERS (host:port,...) and CLICKHOUSE_URL (http(s)://host:port,
   credentials in CLICKHOUSE_USER / CLICKHOUSE_PASSWORD);
2. containers (apache/kafka, clickhouse/clickhouse-server) when a Docker engine answers;
3. otherwise the local Apache Kafka broker (mbo_core.kafka.broker, installed by `make setup`) and
   chDB in a temporary directory: one broker for the whole session.

Never mock Kafka or ClickHouse: take `infra_settings` (unique topic names, group ids and
ClickHouse database per test, so tests cannot collide) and build clients with
mbo_core.kafka.clients / mbo_core.storage.clickhouse. With chDB, ONE data directory may be
open per process: in-process tests must use the session's `clickhouse_url` (this is what
`infra_settings` and `clickhouse_client` do), never a chdb directory of their own.

The session fails if a Kafka broker started by it (found by the PYTEST_MBO_RUN_ID tag in its
environment, inherited through `mbo` subprocesses too) is still alive at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mbo_core.kafka import broker, probes
from mbo_core.settings import ENV_PREFIX, Settings

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

RUN_ID_VAR = "PYTEST_MBO_RUN_ID"
KAFKA_IMAGE = "apache/kafka:4.1.1"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"
_CONTAINER_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ClickHouseBackend:
    url: str
    username: str = "default"
    password: str = ""


def make_settings(**values: Any) -> Settings:
    """Settings from `values` and defaults only: no .env, no secret files, no MBO_* variables
    of whoever runs the tests (the session removes those, see _hermetic_environment)."""
    return Settings(_env_file=None, _secrets_dir=None, **values)  # type: ignore[call-arg]


def brokers_tagged(run_id: str) -> list[int]:
    """Live Kafka brokers (java ... kafka.Kafka) whose environment carries this test run's tag."""
    tag = f"{RUN_ID_VAR}={run_id}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"kafka.Kafka" not in (proc / "cmdline").read_bytes().split(b"\0"):
                continue
            if tag in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile, or a zombie without readable environment
    return found


@pytest.fixture(scope="session", autouse=True)
def _hermetic_environment() -> Iterator[None]:
    """No MBO_* variables from the caller's shell; tag every broker the session starts."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith(ENV_PREFIX):
                patch.delenv(name)
        run_id = uuid.uuid4().hex
        patch.setenv(RUN_ID_VAR, run_id)
        yield
        leftovers = brokers_tagged(run_id)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not leftovers, f"the tests left Kafka brokers running (killed now): {leftovers}"


@functools.cache
def docker_available() -> bool:
    """True if a Docker engine answers a ping within a few seconds."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker  # noqa: PLC0415

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


async def _kafka_usable(servers: str) -> bool:
    from mbo_core.kafka.clients import make_admin  # noqa: PLC0415 (see clickhouse_client)

    settings = make_settings(kafka={"bootstrap_servers": servers, "request_timeout_ms": 5000})
    admin = make_admin(settings, "test-probe")
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        await admin.close()


@contextlib.contextmanager
def _kafka_container() -> Iterator[str]:
    """A single-node KRaft Apache Kafka whose advertised address works from this host."""
    # Only imported with a Docker engine around.
    from testcontainers.core.container import DockerContainer  # noqa: PLC0415
    from testcontainers.core.docker_client import DockerClient  # noqa: PLC0415

    host = DockerClient().host()
    # The same port inside and outside, so the advertised listener is right on both sides.
    port = probes.free_port("0.0.0.0")
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(port, port)
        .with_envs(
            CLUSTER_ID="MkU3OEVBNTcwNTJENDM2Qk",
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS=f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://0.0.0.0:29093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{host}:{port}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:29093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            # The dev profile's 2 s session timeout, and no 3 s wait before the first rebalance.
            KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS="500",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            # Code that relies on auto-creation must fail here as it would in production.
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
            KAFKA_LOG_DIRS="/tmp/kraft-combined-logs",
        )
    )
    with container:
        servers = f"{host}:{port}"
        deadline = time.monotonic() + _CONTAINER_START_TIMEOUT_S
        while not asyncio.run(_kafka_usable(servers)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka container at {servers} did not become usable")
            time.sleep(0.5)
        yield servers


@pytest.fixture(scope="session")
def kafka_bootstrap(
    _hermetic_environment: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """bootstrap.servers of a real Kafka-protocol broker for the whole session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
    elif docker_available():
        with _kafka_container() as servers:
            yield servers
    else:
        settings = make_settings(data_dir=tmp_path_factory.mktemp("kafka"))
        with broker.LocalBroker(settings) as local:
            yield local.bootstrap_servers


@pytest.fixture(scope="session")
def clickhouse_backend(
    _hermetic_environment: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClickHouseBackend]:
    """A real ClickHouse engine for the whole session: URL and credentials."""
    external = os.environ.get("CLICKHOUSE_URL")
    if external:
        yield ClickHouseBackend(
            url=external,
            username=os.environ.get("CLICKHOUSE_USER", "default"),
            password=os.environ.get("CLICKHOUSE_PASSWORD", ""),
        )
    elif docker_available():
        from testcontainers.community.clickhouse import (  # noqa: PLC0415
            ClickHouseContainer,
        )

        with ClickHouseContainer(CLICKHOUSE_IMAGE, username="mbo", password="mbo-test") as server:
            host = server.get_container_host_ip()
            port = server.get_exposed_port(8123)
            yield ClickHouseBackend(
                url=f"http://{host}:{port}", username="mbo", password="mbo-test"
            )
    else:
        yield ClickHouseBackend(url=f"chdb://{tmp_path_factory.mktemp('chdb')}")


@pytest.fixture(scope="session")
def clickhouse_url(clickhouse_backend: ClickHouseBackend) -> str:
    return clickhouse_backend.url


@pytest.fixture
def unique_prefix() -> str:
    """A short name prefix no other test (or earlier run on the same broker) uses."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def infra_settings(
    kafka_bootstrap: str,
    clickhouse_backend: ClickHouseBackend,
    unique_prefix: str,
    tmp_path: Path,
) -> Settings:
    """dev settings on the session's broker and ClickHouse, with this test's own topic names,
    consumer groups and ClickHouse database."""
    return make_settings(
        data_dir=tmp_path / "data",
        kafka={
            "bootstrap_servers": kafka_bootstrap,
            "processor_group_id": f"{unique_prefix}-processor",
            "sink_group_id": f"{unique_prefix}-sink",
        },
        topics={
            "records": {"name": f"{unique_prefix}.records"},
            "bbo": {"name": f"{unique_prefix}.bbo"},
            "snapshots": {"name": f"{unique_prefix}.snapshots"},
            "dead_letter": {"name": f"{unique_prefix}.dead-letter"},
        },
        clickhouse={
            "url": clickhouse_backend.url,
            "username": clickhouse_backend.username,
            "password": clickhouse_backend.password,
            "database": f"test_{unique_prefix}",
        },
    )


@pytest.fixture
def clickhouse_client(infra_settings: Settings) -> Iterator[Client]:
    """A client on this test's own (new, empty) database, dropped afterwards."""
    # Imported here so that collecting the unit tests does not load clickhouse-connect/pyarrow.
    from mbo_core.storage.clickhouse import connect  # noqa: PLC0415

    client = connect(infra_settings)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.command(f"DROP DATABASE IF EXISTS `{infra_settings.clickhouse.database}` SYNC")
        client.close()
