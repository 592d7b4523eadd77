"""The one place that turns settings into Kafka client options; every stage builds its clients
here.

The same code path for the local broker (Apache Kafka, mbo_core.kafka.broker) and production
clusters:
- producers are idempotent with acks=all (the default): a batch retried after a lost
  connection or a broker restart is written once, in order;
- delivery to consumers is at-least-once (a consumer restarted between its effect and its
  commit sees a message again), so every consumer makes its effects idempotent;
- a consumer without a committed offset starts at the earliest one: every consumer of the
  pipeline needs every message;
- consumers commit by hand after processing (enable_auto_commit=False);
- group session timeouts come from the profile: short in dev so that a group join takes ~1 s.
"""

from __future__ import annotations

import ssl
from typing import Any, Literal

import aiokafka.conn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError
from aiokafka.helpers import create_ssl_context

from mbo_core.errors import MboError
from mbo_core.kafka import broker
from mbo_core.settings import Settings

AUTO_OFFSET_RESET: Literal["earliest"] = "earliest"

# aiokafka reads every response through an asyncio StreamReader whose limit (64 KiB) pauses the
# socket each time 128 KiB are buffered: a fetch response of several MB was read in dozens of
# pause/resume round trips through the event loop. The limit bounds nothing else here (aiokafka
# only calls readexactly), and a response is at most fetch_max_bytes (50 MiB) anyway. Set before
# any connection exists, for aiokafka's clients and Faust's alike. Measured: fetching 234 MB of
# the pipeline's topics 0.86 -> 0.77 CPU-s.
READER_LIMIT = 16 * 1024 * 1024
aiokafka.conn.READER_LIMIT = READER_LIMIT


def bootstrap_servers(settings: Settings) -> str:
    """MBO_KAFKA__BOOTSTRAP_SERVERS, or in dev the local broker recorded in the data dir."""
    if settings.kafka.bootstrap_servers is not None:
        return settings.kafka.bootstrap_servers
    status = broker.broker_status(settings)
    if status.running and status.state is not None:
        return status.state.bootstrap_servers
    raise MboError(
        "MBO_KAFKA__BOOTSTRAP_SERVERS is not set and no local broker is running for "
        f"{settings.data_dir}: start one with `mbo infra up` or set the variable"
    )


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = str(settings.kafka.ssl_cafile) if settings.kafka.ssl_cafile else None
    context: ssl.SSLContext = create_ssl_context(cafile=cafile)
    return context


def common_kwargs(settings: Settings, role: str) -> dict[str, Any]:
    """Connection options every client shares: where, who (client id `<prefix>-<role>`), how."""
    kafka = settings.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "client_id": f"{kafka.client_id}-{role}",
        "request_timeout_ms": kafka.request_timeout_ms,
        "security_protocol": kafka.security_protocol,
    }
    ssl_context = _ssl_context(settings)
    if ssl_context is not None:
        options["ssl_context"] = ssl_context
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return options


def producer_kwargs(settings: Settings, role: str) -> dict[str, Any]:
    """AIOKafkaProducer options: acks from settings (idempotent with acks=all), batching."""
    kafka = settings.kafka
    return {
        **common_kwargs(settings, role),
        "acks": "all" if kafka.acks == "all" else 1,
        # Idempotence needs acks=all; with it aiokafka retries a batch until it is written,
        # never twice (it does not expire in-flight batches), across a broker restart too.
        "enable_idempotence": kafka.acks == "all",
        "linger_ms": kafka.linger_ms,
        "max_batch_size": kafka.max_batch_size,
        "max_request_size": kafka.max_request_size,
        "compression_type": None if kafka.compression_type == "none" else kafka.compression_type,
    }


def consumer_kwargs(settings: Settings, role: str, group_id: str | None) -> dict[str, Any]:
    """AIOKafkaConsumer options: earliest reset, manual commits, the profile's group timeouts.

    group_id None: no group, no commits (e.g. a live reader that assigns partitions itself).
    """
    kafka = settings.kafka
    return {
        **common_kwargs(settings, role),
        "group_id": group_id,
        "auto_offset_reset": AUTO_OFFSET_RESET,
        "enable_auto_commit": False,
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
        # aiokafka's default is the session timeout; spelled out so a join waits as long as
        # a member may take to rejoin, whatever the profile.
        "rebalance_timeout_ms": kafka.session_timeout_ms,
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
        "fetch_max_wait_ms": kafka.fetch_max_wait_ms,
        "isolation_level": "read_uncommitted",
        "check_crcs": kafka.check_crcs,
    }


def admin_kwargs(settings: Settings, role: str = "admin") -> dict[str, Any]:
    return common_kwargs(settings, role)


def probe_bootstrap(settings: Settings) -> str | None:
    """The bootstrap servers when the hand-written probes (mbo_core.kafka.probes, plain
    ApiVersions over TCP) can ask them; None on TLS/SASL listeners, which they cannot."""
    if settings.kafka.security_protocol != "PLAINTEXT":
        return None
    return bootstrap_servers(settings)


def watch_kafka_reachable(settings: Settings, stage: str) -> bool:
    """Start the stage's `mbo_kafka_reachable` watch (mbo_core.kafka.probes.watch_kafka) on
    plaintext listeners; False, watching nothing, on TLS/SASL ones (the probe speaks plain)."""
    from mbo_core.kafka.probes import watch_kafka  # noqa: PLC0415

    bootstrap = probe_bootstrap(settings)
    return bootstrap is not None and watch_kafka(bootstrap, stage)


def make_producer(settings: Settings, role: str, **overrides: Any) -> AIOKafkaProducer:
    """An unstarted producer; `await producer.start()` inside the event loop that uses it."""
    return AIOKafkaProducer(**{**producer_kwargs(settings, role), **overrides})


def make_consumer(
    settings: Settings, role: str, *topics: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    """An unstarted consumer of `topics` (none: assign or subscribe later)."""
    return AIOKafkaConsumer(*topics, **{**consumer_kwargs(settings, role, group_id), **overrides})


def make_admin(settings: Settings, role: str = "admin") -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**admin_kwargs(settings, role))


def faust_app_kwargs(settings: Settings) -> dict[str, Any]:
    """faust.App options with the same broker, timeouts and delivery rules as the aiokafka clients.

    Faust topic declaration stays on (tables need their changelog topics) but the pipeline's own
    topics are created by mbo_core.kafka.topics.ensure_topics before any agent starts.
    """
    kafka = settings.kafka
    options: dict[str, Any] = {
        "broker": [f"kafka://{server}" for server in bootstrap_servers(settings).split(",")],
        "broker_client_id": f"{kafka.client_id}-faust",
        "broker_session_timeout": kafka.session_timeout_ms / 1000,
        "broker_heartbeat_interval": kafka.heartbeat_interval_ms / 1000,
        "broker_rebalance_timeout": kafka.session_timeout_ms / 1000,
        "broker_request_timeout": kafka.request_timeout_ms / 1000,
        "broker_max_poll_interval": kafka.max_poll_interval_ms / 1000,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": AUTO_OFFSET_RESET,
        "producer_acks": -1 if kafka.acks == "all" else 1,
        "producer_linger": kafka.linger_ms / 1000,
        "producer_max_batch_size": kafka.max_batch_size,
        "producer_max_request_size": kafka.max_request_size,
        "producer_compression_type": (
            None if kafka.compression_type == "none" else kafka.compression_type
        ),
        "topic_replication_factor": settings.topics.replication_factor,
        "broker_check_crcs": kafka.check_crcs,
    }
    ssl_context = _ssl_context(settings)
    if kafka.security_protocol.startswith("SASL"):
        import faust  # noqa: PLC0415 (only Faust stages pay for importing Faust)

        options["broker_credentials"] = faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism,
            ssl_context=ssl_context,
        )
    elif ssl_context is not None:
        import faust  # noqa: PLC0415

        options["broker_credentials"] = faust.SSLCredentials(ssl_context)
    return options


async def described_partitions(admin: AIOKafkaAdminClient, *topics: str) -> dict[str, list[int]]:
    """The partition numbers of each topic, from the broker (DescribeTopics / Metadata).

    A consumer's own metadata knows only the topics it subscribed to, so code that assigns
    partitions itself asks here first. MboError for a topic that does not exist.
    """
    result: dict[str, list[int]] = {}
    for described in await admin.describe_topics(list(topics)):
        name = described["topic"]
        if described["error_code"] != 0 or not described["partitions"]:
            raise MboError(f"Kafka topic {name} does not exist")
        result[name] = sorted(p["partition"] for p in described["partitions"])
    return result


async def topic_partitions(settings: Settings, *topics: str) -> list[TopicPartition]:
    """Every partition of `topics`, asked once through a short-lived admin client."""
    admin = make_admin(settings, "metadata")
    await admin.start()
    try:
        described = await described_partitions(admin, *topics)
    finally:
        await admin.close()
    return [TopicPartition(topic, p) for topic in topics for p in described[topic]]


class OffsetWatch:
    """End offsets, committed offsets and group members read again and again through one
    consumer and one admin client (`async with OffsetWatch(settings) as watch`): a drain wait
    asks every half second, and new clients each time would cost more than the answers.

    Either client is made anew after a Kafka error (a broker restart), so a long wait goes on.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Each client starts on its first use: a one-shot read of ends needs no admin client,
        # a one-shot read of committed offsets no consumer.
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._partitions: dict[str, list[int]] = {}

    async def __aenter__(self) -> OffsetWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.reset()

    async def reset(self) -> None:
        """Close both clients; the next call makes new ones."""
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        try:
            if admin is not None:
                await admin.close()
        finally:
            if consumer is not None:
                await consumer.stop()

    async def _started_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = make_consumer(self._settings, "ends", group_id=None)
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def _started_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = make_admin(self._settings, "offsets")
            await admin.start()
            self._admin = admin
        return self._admin

    async def ends(self, topic: str) -> dict[int, int]:
        """The end offset (next offset to be written) of every partition of `topic`."""
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = (await described_partitions(await self._started_admin(), topic))[topic]
            self._partitions[topic] = partitions
        consumer = await self._started_consumer()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}

    async def members(self, group_id: str) -> tuple[str, int]:
        """(state, member count) of a consumer group, e.g. ("Stable", 2); ("Unknown", 0) while
        the broker has no coordinator for it yet (its offsets topic is made on the first
        request)."""
        admin = await self._started_admin()
        try:
            (response,) = await admin.describe_consumer_groups([group_id])
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            return "Unknown", 0
        for error_code, group, state, _protocol_type, _protocol, members in response.groups:
            if error_code == 0 and group == group_id:
                return str(state), len(members)
        return "Unknown", 0

    async def committed(self, group_id: str, topic: str, partitions: list[int]) -> dict[int, int]:
        """The group's committed offset per partition (-1: none)."""
        admin = await self._started_admin()
        offsets = await admin.list_consumer_group_offsets(
            group_id, partitions=[TopicPartition(topic, p) for p in partitions]
        )
        result = dict.fromkeys(partitions, -1)
        for tp, meta in offsets.items():
            result[tp.partition] = meta.offset
        return result


async def partition_ends(settings: Settings, topic: str) -> dict[int, int]:
    """The end offset (next offset to be written) of every partition of `topic`, once."""
    async with OffsetWatch(settings) as watch:
        return await watch.ends(topic)


async def committed_offsets(
    settings: Settings, group_id: str, topic: str, partitions: list[int]
) -> dict[int, int]:
    """The group's committed offset per partition (-1: none), once."""
    async with OffsetWatch(settings) as watch:
        return await watch.committed(group_id, topic, partitions)
