"""book_processor.app: the Faust app holds its fetches as long as the processor setting says."""

from __future__ import annotations

from faust.transport.drivers import aiokafka as faust_aiokafka

from book_processor.app import create_app
from tests.conftest import make_settings


def test_the_processor_uses_its_own_fetch_wait() -> None:
    kafka = {"bootstrap_servers": "127.0.0.1:9", "processor_fetch_max_wait_ms": 7,
             "fetch_max_wait_ms": 300}  # fmt: skip
    settings = make_settings(kafka=kafka)
    create_app(settings)  # builds the app only: nothing connects
    # The consumer Faust builds gets this wait (book_processor.app._use_fetch_wait).
    assert faust_aiokafka.AIOKafkaConsumerThread._mbo_fetch_wait == 7  # type: ignore[attr-defined]
