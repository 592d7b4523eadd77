"""`mbo run --until-drained` gives up soon, saying why, when the broker stops answering."""

from __future__ import annotations

import asyncio
import time

import pytest

from mbo_cli.run import _BrokerWatch
from mbo_core.errors import MboError
from mbo_core.kafka.clients import probe_bootstrap
from mbo_core.kafka.probes import free_port
from tests.conftest import make_settings


def test_a_broker_that_does_not_answer_fails_the_wait_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_BrokerWatch, "BROKER_AWAY_S", 0.3)
    monkeypatch.setattr(_BrokerWatch, "EVERY_S", 0.0)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    watch = _BrokerWatch(address)

    async def wait() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await watch.check()
            await asyncio.sleep(0.05)

    with pytest.raises(MboError, match=f"broker at {address} has not answered for 0 s"):
        asyncio.run(wait())


def test_tls_listeners_which_the_probe_cannot_ask_are_not_watched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A TLS listener never answers the probe's plain ApiVersions: watching it would end every
    drain wait against a TLS cluster after 30 s."""
    monkeypatch.setattr(_BrokerWatch, "BROKER_AWAY_S", 0.0)
    monkeypatch.setattr(_BrokerWatch, "EVERY_S", 0.0)
    tls = make_settings(kafka={"bootstrap_servers": "127.0.0.1:1", "security_protocol": "SSL"})
    assert probe_bootstrap(tls) is None
    assert probe_bootstrap(make_settings(kafka={"bootstrap_servers": "127.0.0.1:1"})) == (
        "127.0.0.1:1"
    )
    watch = _BrokerWatch(probe_bootstrap(tls))
    for _ in range(3):
        asyncio.run(watch.check())  # never raises
