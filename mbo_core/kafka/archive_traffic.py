"""The client traffic a broker's class archive is recorded under (`build_class_archive`).

The JVM archives the classes it loaded while the archive was being recorded. A broker that
only booted and stopped had loaded none of the classes that serve clients, so every run
loaded, parsed and verified them from the jars at its first requests: the broker's CPU while
the stages start, and the first second's slow produce and fetch answers. This drives each
kind of request the stages make against the scratch broker: topic creation with configs and
metadata, idempotent produce with headers, fetches from a group member and from an assigned
consumer, the group protocol (join, sync, heartbeat, commit, offset fetch), list offsets and
the admin calls `mbo run` makes (describe and list groups, their committed offsets).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic

from mbo_core.kafka.clients import make_admin, make_consumer, make_producer
from mbo_core.settings import Settings

TOPIC = "mbo-class-archive"
GROUP = "mbo-class-archive"
MESSAGES = 400
PARTITIONS = 2
#: A message of the size the stages send flat out (a chunk of records, a BBO message).
VALUE = bytes(range(256)) * 1024


async def exercise(
    settings: Settings, *, topic: str = TOPIC, group: str = GROUP, timeout_s: float = 60.0
) -> int:
    """Create `topic`, produce to it, read it back in `group` and by assignment, ask what
    `mbo run` asks about groups; returns the messages each consumer read. aiokafka's own log
    is silenced meanwhile: on a new broker its first group requests fail and are retried
    (GroupCoordinatorNotAvailable while the offsets topic is created), which is expected here.
    """
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        return await asyncio.wait_for(_exercise(settings, topic, group), timeout_s)
    finally:
        client_log.setLevel(level)


async def _exercise(settings: Settings, topic: str, group: str) -> int:
    admin = make_admin(settings, "class-archive")
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, PARTITIONS, 1, topic_configs={"retention.ms": "600000"})]
        )
        await admin.describe_topics([topic])
        await _produce(settings, topic)
        read = await _read_in_group(settings, topic, group)
        await admin.describe_consumer_groups([group])
        await admin.list_consumer_groups()
        await admin.list_consumer_group_offsets(group)
        assigned = await _read_assigned(settings, topic)
        if read != MESSAGES or assigned != MESSAGES:
            raise RuntimeError(f"read {read} and {assigned} of {MESSAGES} messages")
        return read
    finally:
        await admin.close()


async def _produce(settings: Settings, topic: str) -> None:
    producer = make_producer(settings, "class-archive")
    await producer.start()
    try:
        for i in range(MESSAGES):
            size = len(VALUE) if i % 4 == 0 else 200  # a few large messages, many small ones
            await producer.send(
                topic,
                VALUE[:size],
                key=str(i % 8).encode(),
                partition=i % PARTITIONS,
                headers=[("mbo-schema", b"archive"), ("sent-ns", str(i).encode())],
            )
            if i % 50 == 0:
                await producer.flush()
        await producer.flush()
    finally:
        await producer.stop()


async def _read_in_group(settings: Settings, topic: str, group: str) -> int:
    consumer = make_consumer(settings, "class-archive", topic, group_id=group)
    await consumer.start()
    try:
        return await _read_all(consumer, commit=True)
    finally:
        await consumer.stop()


async def _read_assigned(settings: Settings, topic: str) -> int:
    consumer = make_consumer(settings, "class-archive", group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        await consumer.end_offsets(partitions)
        return await _read_all(consumer, commit=False)
    finally:
        await consumer.stop()


async def _read_all(consumer: AIOKafkaConsumer, *, commit: bool) -> int:
    """Fetch until every message was read (committing after each fetch if `commit`)."""
    read = 0
    while read < MESSAGES:
        batches = await consumer.getmany(timeout_ms=1000)
        read += sum(len(messages) for messages in batches.values())
        if commit:
            await consumer.commit()
    return read
