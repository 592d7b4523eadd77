"""Every Kafka topic of the pipeline, declared once, and `ensure_topics` that creates them.

Topics are created explicitly with their final partition count before anything produces (the
local broker, like production clusters, has auto-creation off): keys map to partitions by count,
so a topic repartitioned later would send an instrument's new records to another partition than
its old ones, and the per-instrument order would be lost. All topics delete by age:
every consumer needs every message, so none is compacted. The records topic keeps everything
by default: the processor rebuilds a partition's books from its start when it has no usable
checkpoint (book_processor.checkpoint).

| topic (default name) | key           | value                                   | retention |
|----------------------|---------------|-----------------------------------------|-----------|
| mbo.records          | instrument id | chunk of whole events, raw DBN records  | forever   |
| mbo.bbo              | instrument id | top-of-book event                       | 7 days    |
| mbo.snapshots        | instrument id | depth-N book snapshot                   | 30 days   |
| mbo.dead-letter      | original key  | a refused message, whole (headers: why) | 30 days   |
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from mbo_core.errors import MboError
from mbo_core.kafka.clients import bootstrap_servers, make_admin
from mbo_core.settings import Settings, TopicSettings

log = logging.getLogger("mbo.topics")

_TOPIC_ALREADY_EXISTS = 36
#: How long a freshly created topic may take to show all its partitions in metadata.
_METADATA_WAIT_S = 10.0


@dataclass(frozen=True)
class TopicSpec:
    """A topic as created: its name, partition count, replication and topic-level config."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)
    #: The variable that sets the partition count, for error messages.
    partitions_var: str = ""


def _spec(topic: TopicSettings, key: str, replication_factor: int) -> TopicSpec:
    return TopicSpec(
        name=topic.name,
        partitions=topic.partitions,
        replication_factor=replication_factor,
        config={"cleanup.policy": "delete", "retention.ms": str(topic.retention_ms)},
        partitions_var=f"MBO_TOPICS__{key.upper()}__PARTITIONS",
    )


def topic_specs(settings: Settings) -> tuple[TopicSpec, ...]:
    """The pipeline's topics, in the order they are created."""
    topics = settings.topics
    replication = topics.replication_factor
    return (
        _spec(topics.records, "records", replication),
        _spec(topics.bbo, "bbo", replication),
        _spec(topics.snapshots, "snapshots", replication),
        _spec(topics.dead_letter, "dead_letter", replication),
    )


#: Waits between two attempts to reach the brokers at start: doubling from the first to the max.
_RETRY_FIRST_S = 0.5
_RETRY_MAX_S = 5.0


async def _started_admin(settings: Settings, wait_s: float) -> AIOKafkaAdminClient:
    """A started admin client, retrying for wait_s while the brokers do not answer."""
    deadline = time.monotonic() + wait_s
    pause = _RETRY_FIRST_S
    while True:
        admin = make_admin(settings, "topics")
        try:
            await admin.start()
        except KafkaError as exc:
            await admin.close()
            left = deadline - time.monotonic()
            if left <= 0:
                waited = f" for {wait_s:.0f} s" if wait_s else ""
                raise MboError(
                    f"cannot reach Kafka at {bootstrap_servers(settings)}{waited}: {exc}"
                ) from None
            log.warning(
                "Kafka at %s does not answer (%s); trying again for %.0f s more",
                bootstrap_servers(settings),
                type(exc).__name__,
                left,
            )
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, _RETRY_MAX_S)
            continue
        return admin


async def _partition_counts(admin: AIOKafkaAdminClient, names: Iterable[str]) -> dict[str, int]:
    # Only ask about topics that list_topics reported: a metadata request for an unknown topic
    # auto-creates it with the broker's default partition count on brokers that allow it.
    wanted = list(names)
    if not wanted:
        return {}  # an empty topic list in a metadata request means "every topic"
    described = await admin.describe_topics(wanted)
    counts: dict[str, int] = {}
    for topic in described:
        if topic["error_code"] == 0:
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def _create(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> list[str]:
    """Create specs; returns the names this call created (others may win a creation race)."""
    response = await admin.create_topics(
        [
            NewTopic(
                spec.name,
                spec.partitions,
                spec.replication_factor,
                topic_configs=dict(spec.config),
            )
            for spec in specs
        ]
    )
    created = []
    for name, error_code, error_message in response.topic_errors:
        if error_code == 0:
            created.append(name)
        elif error_code != _TOPIC_ALREADY_EXISTS:
            raise MboError(f"cannot create Kafka topic {name}: error {error_code} {error_message}")
    return created


async def _wait_visible(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> dict[str, int]:
    """Partition counts of specs once metadata shows them all (creation propagates lazily)."""
    deadline = time.monotonic() + _METADATA_WAIT_S
    names = [spec.name for spec in specs]
    while True:
        listed = set(await admin.list_topics())
        counts = await _partition_counts(admin, [name for name in names if name in listed])
        if all(name in counts for name in names) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.1)


async def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] | None = None, *, wait_s: float | None = None
) -> list[str]:
    """Create the missing topics with their final partition count; leave existing ones alone.

    Idempotent. Returns the names it created. Every stage calls it first, so it is also where a
    stage waits for brokers that do not answer yet: for wait_s (default
    MBO_KAFKA__STARTUP_WAIT_S), retrying with backoff. Raises MboError if an existing topic has
    another partition count than configured (Kafka cannot shrink it, and growing it would break
    keyed order) or if the broker cannot be reached in time or refuses a creation. Topic configs
    of existing topics are left as they are (an operator may have changed a retention on
    purpose).
    """
    wanted = list(topic_specs(settings) if specs is None else specs)
    admin = await _started_admin(
        settings, settings.kafka.startup_wait_s if wait_s is None else wait_s
    )
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in wanted if spec.name not in existing]
        created = await _create(admin, missing) if missing else []
        counts = await _wait_visible(admin, wanted)
    except KafkaError as exc:
        raise MboError(f"Kafka refused a topic request: {exc}") from None
    finally:
        await admin.close()

    for spec in wanted:
        actual = counts.get(spec.name)
        if actual is None:
            raise MboError(f"Kafka topic {spec.name} does not show up after creation")
        if actual != spec.partitions:
            setting = (
                f"{spec.partitions_var}={spec.partitions}"
                if spec.partitions_var
                else (f"the declared {spec.partitions}")
            )
            raise MboError(
                f"Kafka topic {spec.name} has {actual} partitions, not {setting}; a count cannot "
                "change in place: delete the topic (and its data) or configure the existing count"
            )
    return created
