"""Kafka client options, and produce / consume through a group with commit and resume."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import pytest
from aiokafka import TopicPartition

from mbo_core.kafka.clients import (
    committed_offsets,
    consumer_kwargs,
    faust_app_kwargs,
    make_consumer,
    make_producer,
    partition_ends,
    producer_kwargs,
)
from mbo_core.kafka.topics import TopicSpec, ensure_topics
from mbo_core.settings import Settings
from tests.conftest import make_settings

EXTERNAL = {"kafka": {"bootstrap_servers": "kafka-1:9092,kafka-2:9092"}}
MESSAGES = 30
PARTITIONS = 3
#: Upper bound for one consuming phase; group joins take ~1 s with the dev timeouts.
PHASE_TIMEOUT_S = 20.0


def test_producer_is_idempotent_with_acks_all() -> None:
    options = producer_kwargs(make_settings(**EXTERNAL), "producer")
    assert options["bootstrap_servers"] == "kafka-1:9092,kafka-2:9092"
    assert options["client_id"] == "mbo-producer"
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is True
    assert "transactional_id" not in options
    assert options["compression_type"] is None
    # Kafka refuses idempotence without acks=all: leader-only acks turn it off.
    leader_only = producer_kwargs(make_settings(kafka={**EXTERNAL["kafka"], "acks": "1"}), "p")
    assert (leader_only["acks"], leader_only["enable_idempotence"]) == (1, False)


def test_consumer_options_start_earliest_and_commit_by_hand() -> None:
    options = consumer_kwargs(make_settings(**EXTERNAL), "sink", "the-group")
    assert options["group_id"] == "the-group"
    assert options["auto_offset_reset"] == "earliest"
    assert options["enable_auto_commit"] is False
    assert (options["session_timeout_ms"], options["heartbeat_interval_ms"]) == (2000, 500)


def test_consumers_check_crcs_only_when_asked() -> None:
    assert consumer_kwargs(make_settings(**EXTERNAL), "sink", None)["check_crcs"] is False
    asked = make_settings(kafka={**EXTERNAL["kafka"], "check_crcs": True})
    assert consumer_kwargs(asked, "sink", None)["check_crcs"] is True
    assert faust_app_kwargs(asked)["broker_check_crcs"] is True


def test_responses_are_read_without_pausing_the_socket_every_128_kib() -> None:
    import aiokafka.conn  # noqa: PLC0415

    assert aiokafka.conn.READER_LIMIT >= 16 * 1024 * 1024


def test_prod_profile_has_long_session_timeouts() -> None:
    prod = make_settings(profile="prod", clickhouse={"url": "http://ch:8123"}, **EXTERNAL)
    options = consumer_kwargs(prod, "sink", "g")
    assert options["session_timeout_ms"] == 45_000
    assert options["request_timeout_ms"] > options["session_timeout_ms"]


def test_sasl_ssl_options() -> None:
    settings = make_settings(
        kafka={
            **EXTERNAL["kafka"],
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "pipeline",
            "sasl_password": "pw",
        }
    )
    options = producer_kwargs(settings, "producer")
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("pipeline", "pw")
    assert options["ssl_context"] is not None


def test_faust_options_are_accepted_by_faust() -> None:
    import faust  # noqa: PLC0415 (slow; only this test needs it)

    options = faust_app_kwargs(make_settings(**EXTERNAL))
    app = faust.App("mbo-test", **options)
    conf: Any = app.conf
    assert [str(url) for url in conf.broker] == ["kafka://kafka-1:9092", "kafka://kafka-2:9092"]
    assert conf.broker_session_timeout == 2.0
    assert conf.broker_heartbeat_interval == 0.5
    assert conf.consumer_auto_offset_reset == "earliest"
    assert conf.broker_check_crcs is False
    assert str(conf.processing_guarantee) in ("at_least_once", "ProcessingGuarantee.AT_LEAST_ONCE")


def _key(index: int) -> bytes:
    return f"instrument-{index % 5}".encode()


async def _produce(settings: Settings, topic: str) -> None:
    producer = make_producer(settings, "test-producer")
    await producer.start()
    try:
        for index in range(MESSAGES):
            await producer.send(
                topic,
                key=_key(index),
                value=f"chunk-{index}".encode(),
                headers=[("schema", b"mbo.v1"), ("index", str(index).encode())],
            )
        await producer.flush()
    finally:
        await producer.stop()


Record = tuple[int, int, bytes, bytes, tuple[tuple[str, bytes], ...]]


async def _consume(
    settings: Settings, topic: str, group: str, *, stop_after: int, already: int = 0
) -> tuple[list[Record], dict[int, int]]:
    """Read through the group, committing after each batch; stop once `stop_after` messages
    were read (counting `already`). Returns what was read and the committed offsets."""
    consumer = make_consumer(settings, "test-consumer", topic, group_id=group)
    await consumer.start()
    seen: list[Record] = []
    committed: dict[int, int] = {}
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    try:
        while already + len(seen) < stop_after:
            assert time.monotonic() < deadline, f"read {len(seen)} messages, wanted more"
            batches = await consumer.getmany(timeout_ms=200, max_records=4)
            for partition, messages in batches.items():
                take = messages[: stop_after - already - len(seen)]
                if not take:
                    continue
                seen.extend((m.partition, m.offset, m.key, m.value, tuple(m.headers)) for m in take)
                # Commit exactly what was processed, which is what the stages do.
                await consumer.commit({partition: take[-1].offset + 1})
                committed[partition.partition] = take[-1].offset + 1
                if already + len(seen) >= stop_after:
                    break
        for partition in range(PARTITIONS):
            offset = await consumer.committed(TopicPartition(topic, partition))
            if partition in committed:
                assert offset == committed[partition]
    finally:
        await consumer.stop()
    return seen, committed


def _positions(records: Iterable[Record]) -> set[tuple[int, int]]:
    return {(partition, offset) for partition, offset, *_ in records}


@pytest.mark.integration
def test_group_consumer_commits_and_a_new_member_resumes(infra_settings: Settings) -> None:
    topic = infra_settings.topics.records.name
    group = infra_settings.kafka.sink_group_id
    asyncio.run(ensure_topics(infra_settings, [TopicSpec(topic, PARTITIONS, 1)]))
    asyncio.run(_produce(infra_settings, topic))

    first, committed = asyncio.run(_consume(infra_settings, topic, group, stop_after=12))
    assert len(first) == 12
    assert committed

    second, _ = asyncio.run(
        _consume(infra_settings, topic, group, stop_after=MESSAGES, already=len(first))
    )
    everything = first + second
    assert len(everything) == MESSAGES
    assert not _positions(first) & _positions(second), "a committed message was read again"
    assert {value for *_, value, _ in everything} == {
        f"chunk-{i}".encode() for i in range(MESSAGES)
    }

    # The resumed member started each partition exactly at the committed offset.
    for partition, offset in committed.items():
        resumed = [o for p, o, *_ in second if p == partition]
        if resumed:
            assert min(resumed) == offset

    # Keys and headers arrive intact; one key always lands on one partition, in order.
    partition_of_key: dict[bytes, int] = {}
    for partition, _offset, key, value, headers in sorted(everything):
        index = int(value.decode().removeprefix("chunk-"))
        assert key == _key(index)
        assert headers == (("schema", b"mbo.v1"), ("index", str(index).encode()))
        assert partition_of_key.setdefault(key, partition) == partition
    for key, partition in partition_of_key.items():
        indexes = [
            int(v.decode().removeprefix("chunk-"))
            for p, _, k, v, _ in sorted(everything)
            if k == key and p == partition
        ]
        assert indexes == sorted(indexes)

    # End offsets (ListOffsets "latest") and the group's committed offsets, as `mbo run` reads them.
    ends = asyncio.run(partition_ends(infra_settings, topic))
    assert sum(ends.values()) == MESSAGES
    assert asyncio.run(committed_offsets(infra_settings, group, topic, sorted(ends))) == ends


def test_the_sink_and_the_live_feed_gather_their_fetches() -> None:
    """Consumers that need no per-message latency let the broker gather data per fetch: the
    sink (it inserts about once a second) and the API's live feed (at most 50 updates/s)."""
    from api.state import live_consumer_overrides  # noqa: PLC0415
    from sink.app import consumer_overrides  # noqa: PLC0415

    settings = make_settings(
        kafka={**EXTERNAL["kafka"], "sink_fetch_min_bytes": 4096, "sink_fetch_max_wait_ms": 70,
               "fetch_max_wait_ms": 300},
    )  # fmt: skip
    sink = consumer_overrides(settings)
    assert (sink["fetch_min_bytes"], sink["fetch_max_wait_ms"]) == (4096, 70)
    live = live_consumer_overrides(settings)
    # The live feed reads once per MBO_KAFKA__LIVE_FETCH_MAX_WAIT_MS itself; a fetch returns at
    # the first byte and is held while there is none.
    assert live == {"fetch_min_bytes": 1, "fetch_max_wait_ms": 300}
    defaults = consumer_overrides(make_settings(**EXTERNAL))
    assert (defaults["fetch_min_bytes"], defaults["fetch_max_wait_ms"]) == (1 << 20, 250)

    async def build() -> None:  # options aiokafka takes (clients are made inside a loop)
        for overrides in (sink, live):
            make_consumer(settings, "t", "topic", group_id=None, **overrides)

    asyncio.run(build())
