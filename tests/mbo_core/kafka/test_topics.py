"""Topic declaration and ensure_topics against a real broker."""

from __future__ import annotations

import asyncio
import time

import pytest

from mbo_core.errors import MboError
from mbo_core.kafka.clients import make_admin
from mbo_core.kafka.probes import free_port
from mbo_core.kafka.topics import TopicSpec, ensure_topics, topic_specs
from mbo_core.settings import Settings
from tests.conftest import make_settings


async def _partitions(settings: Settings, names: list[str]) -> dict[str, int]:
    admin = make_admin(settings, "test")
    await admin.start()
    try:
        listed = set(await admin.list_topics())
        # Describe only listed topics: describing an unknown one would auto-create it. And
        # never an empty list, which a metadata request reads as "every topic".
        wanted = [name for name in names if name in listed]
        described = await admin.describe_topics(wanted) if wanted else []
        return {topic["topic"]: len(topic["partitions"]) for topic in described}
    finally:
        await admin.close()


def test_specs_come_from_settings() -> None:
    settings = make_settings(
        topics={"records": {"name": "r", "partitions": 3}, "replication_factor": 2}
    )
    records, bbo, snapshots, dead_letter = topic_specs(settings)
    assert (records.name, records.partitions, records.replication_factor) == ("r", 3, 2)
    assert records.partitions_var == "MBO_TOPICS__RECORDS__PARTITIONS"
    assert (bbo.name, snapshots.name) == ("mbo.bbo", "mbo.snapshots")
    assert (dead_letter.name, dead_letter.partitions) == ("mbo.dead-letter", 1)
    for spec in (records, bbo, snapshots, dead_letter):
        assert spec.config["cleanup.policy"] == "delete"  # every consumer needs every message
    # Records forever (a rebuild reads a partition from offset 0); snapshots outlive BBO events.
    assert int(records.config["retention.ms"]) == -1
    assert int(snapshots.config["retention.ms"]) > int(bbo.config["retention.ms"]) > 0


@pytest.mark.integration
def test_ensure_topics_creates_all_then_is_idempotent(infra_settings: Settings) -> None:
    names = [spec.name for spec in topic_specs(infra_settings)]
    assert asyncio.run(_partitions(infra_settings, names)) == {}

    created = asyncio.run(ensure_topics(infra_settings))
    assert sorted(created) == sorted(names)
    expected = {spec.name: spec.partitions for spec in topic_specs(infra_settings)}
    assert asyncio.run(_partitions(infra_settings, names)) == expected

    assert asyncio.run(ensure_topics(infra_settings)) == []
    assert asyncio.run(_partitions(infra_settings, names)) == expected


@pytest.mark.integration
def test_partition_count_mismatch_is_detected(infra_settings: Settings) -> None:
    name = infra_settings.topics.bbo.name
    asyncio.run(ensure_topics(infra_settings, [TopicSpec(name, 2, 1)]))
    with pytest.raises(MboError) as mismatch:
        asyncio.run(ensure_topics(infra_settings))
    message = str(mismatch.value)
    assert name in message
    assert "has 2 partitions" in message
    assert "MBO_TOPICS__BBO__PARTITIONS=8" in message
    assert asyncio.run(_partitions(infra_settings, [name])) == {name: 2}  # left alone


def test_unreachable_broker_is_a_readable_error() -> None:
    closed = make_settings(kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    with pytest.raises(MboError, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+: "):
        asyncio.run(ensure_topics(closed, wait_s=0))


def test_a_stage_waits_for_a_broker_that_is_not_up_yet_then_says_for_how_long() -> None:
    closed = make_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "startup_wait_s": 1.5}
    )
    started = time.monotonic()
    with pytest.raises(MboError, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+ for 2 s"):
        asyncio.run(ensure_topics(closed))
    assert 1.5 <= time.monotonic() - started < 10
