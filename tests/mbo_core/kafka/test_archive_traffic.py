"""mbo_core.kafka.archive_traffic: the requests a class archive is recorded under, served by a
real broker."""

from __future__ import annotations

import asyncio

import pytest

from mbo_core.kafka import archive_traffic
from mbo_core.kafka.clients import committed_offsets, partition_ends
from mbo_core.settings import Settings

pytestmark = pytest.mark.integration


def test_every_message_is_read_in_a_group_and_by_assignment(
    infra_settings: Settings, unique_prefix: str
) -> None:
    topic, group = f"{unique_prefix}.archive", f"{unique_prefix}-archive"
    read = asyncio.run(archive_traffic.exercise(infra_settings, topic=topic, group=group))
    assert read == archive_traffic.MESSAGES
    ends = asyncio.run(partition_ends(infra_settings, topic))
    assert sum(ends.values()) == archive_traffic.MESSAGES
    assert len(ends) == archive_traffic.PARTITIONS
    # The group committed what it read.
    committed = asyncio.run(committed_offsets(infra_settings, group, topic, sorted(ends)))
    assert committed == ends
