"""A replay started again with its id resumes after what the records topic holds: every record
of every instrument once, in order, one end-of-stream marker each, wherever it was stopped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from generator.api import generate_file
from generator.core import GeneratorConfig
from mbo_core.settings import Settings
from producer.app import ProduceSummary, produce_file
from producer.resume import ResumeFilter, ResumePoint, Sent
from tests.conftest import make_settings
from tests.producer.reading import Message, read_topic
from tests.records import add, to_array

pytestmark = pytest.mark.integration

INSTRUMENTS = 3


def per_instrument(messages: list[Message]) -> dict[int, bytes]:
    """Each instrument's records in topic order (one partition each), markers left out."""
    out: dict[int, list[bytes]] = {}
    for message in messages:
        if not message.end_of_stream:
            out.setdefault(int(message.key), []).append(message.value)
    return {key: b"".join(values) for key, values in out.items()}


def _replay(
    settings: Settings, path: Path, replay_id: str, stop_after: int | None
) -> ProduceSummary:
    async def run() -> ProduceSummary:
        stop = asyncio.Event()
        read = 0

        def progress(count: int) -> None:
            nonlocal read
            read += count
            if stop_after is not None and read >= stop_after:
                stop.set()

        return await produce_file(settings, path, loops=2, rate=400_000, progress=progress,
                                  stop=stop, replay_id=replay_id)  # fmt: skip

    return asyncio.run(run())


def test_a_replay_stopped_twice_and_resumed_sends_every_record_once(
    infra_settings: Settings, tmp_path: Path, unique_prefix: str
) -> None:
    path = tmp_path / "three.dbn"
    generate_file(path, GeneratorConfig(instruments=INSTRUMENTS, records=30_000, publishers=2,
                                        seed=5))  # fmt: skip
    settings = infra_settings.model_copy(
        update={"pipeline": infra_settings.pipeline.model_copy(update={"chunk_records": 200})}
    )
    # Stopped in the first copy, then in the second (after the Clears), then to the end.
    first = _replay(settings, path, "r1", 12_000)
    second = _replay(settings, path, "r1", 25_000)
    last = _replay(settings, path, "r1", None)
    assert first.interrupted and second.interrupted and not last.interrupted
    assert second.records_already_sent == first.records_sent
    assert last.records_already_sent == first.records_sent + second.records_sent
    resumed = read_topic(settings, markers=INSTRUMENTS)

    # The same replay uninterrupted, into another topic.
    reference_settings = make_settings(
        kafka=settings.kafka.model_dump(),
        pipeline=settings.pipeline.model_dump(),
        topics={"records": {"name": f"{unique_prefix}.reference"}},
    )
    whole = _replay(reference_settings, path, "r2", None)
    reference = read_topic(reference_settings, markers=INSTRUMENTS)

    assert per_instrument(resumed) == per_instrument(reference)
    total = first.records_sent + second.records_sent + last.records_sent
    assert total == whole.records_sent == 2 * 30_000 + whole.clears
    markers = [int(m.key) for m in resumed if m.end_of_stream]
    assert sorted(markers) == sorted(set(markers)) and len(markers) == INSTRUMENTS
    # A fourth start finds the replay complete: it sends nothing.
    again = _replay(settings, path, "r1", None)
    assert (again.records_sent, again.end_of_stream_markers) == (0, 0)


def test_the_filter_drops_the_first_n_records_of_each_instrument() -> None:
    recs = to_array([add("B", 1, 1, i, instrument_id=1 + i % 2) for i in range(10)])
    point = ResumePoint("x", {1: Sent(records=3), 2: Sent(records=7)})
    unsent = ResumeFilter(point)
    first, second = unsent(recs[:6]), unsent(recs[6:])
    assert first["order_id"].tolist() == []  # 1: orders 0 2 4 skipped; 2: 1 3 5
    assert second["order_id"].tolist() == [6, 8]  # 2: 7 and 9 skipped too
    assert unsent.remaining == {2: 2}  # two more of instrument 2 to skip when they come
