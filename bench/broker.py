"""The local broker's latency floor and how its CPU grows with what it stores.

    poetry run python -m bench.broker [--waits 100,20,10,5] [--messages 300] [--every-ms 10]
                                      [--growth-seconds 60] [--growth-rate 200]
                                      [--growth-bytes 50000] [--growth-partitions 8]

Starts the local broker (tansu) in a temporary data dir, then:

1. hop: for each MBO_KAFKA__FETCH_MAX_WAIT_MS value, sends --messages small messages one every
   --every-ms with an aiokafka producer (linger 0) and receives them with a plain aiokafka
   consumer: latency from send to receipt, p50/p90/p99. On Apache Kafka a held fetch is answered
   as soon as data arrives; the local broker answers when the wait runs out, which makes the
   wait a floor under every hop (docs/infrastructure.md).
2. growth (--growth-seconds > 0): a producer sends --growth-rate messages/s of --growth-bytes
   each, round-robin over --growth-partitions partitions, and one consumer (10 ms fetch wait)
   follows: the broker's CPU (cores) in each 5 s window at constant traffic, against the
   messages it holds. tansu's memory storage costs more per request the more batches a
   partition holds, so a long run of the pipeline on it slows down by itself.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.procstat import cpu_seconds
from mbo_core.broker import LocalBroker
from mbo_core.kafka import make_consumer, make_producer
from mbo_core.settings import Settings
from mbo_core.topics import TopicSpec, ensure_topics

TOPIC = "bench.hop"
GROWTH_TOPIC = "bench.growth"
GROWTH_WINDOW_S = 5.0


async def hop(settings: Settings, messages: int, every_s: float) -> dict[str, Any]:
    producer = make_producer(settings, "bench-hop", linger_ms=0)
    consumer = make_consumer(settings, "bench-hop", TOPIC, group_id=None)
    await producer.start()
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=500)
        received: list[float] = []

        async def receive() -> None:
            deadline = time.monotonic() + messages * every_s + 60
            while len(received) < messages and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                now = time.perf_counter_ns()
                for batch in batches.values():
                    received.extend((now - int(m.value or b"0")) / 1e6 for m in batch)

        receiver = asyncio.create_task(receive())
        for _ in range(messages):
            await producer.send(TOPIC, str(time.perf_counter_ns()).encode(), partition=0)
            await asyncio.sleep(every_s)
        await receiver
    finally:
        await consumer.stop()
        await producer.stop()
    latency = np.array(received)
    p50, p90, p99 = (round(float(np.percentile(latency, q)), 2) for q in (50, 90, 99))
    return {"received": len(latency), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99}


async def growth(
    settings: Settings, pid: int, *, seconds: float, rate: float, size: int, partitions: int
) -> list[dict[str, float]]:
    """Broker CPU per 5 s window while a constant stream is produced and consumed."""
    producer = make_producer(settings, "bench-growth", linger_ms=0)
    consumer = make_consumer(settings, "bench-growth", GROWTH_TOPIC, group_id=None)
    await producer.start()
    await consumer.start()
    received = 0

    async def follow() -> None:
        nonlocal received
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            received += sum(len(batch) for batch in batches.values())

    follower = asyncio.create_task(follow())
    windows: list[dict[str, float]] = []
    payload = b"x" * size
    try:
        started = time.monotonic()
        window_start, window_cpu = started, cpu_seconds(pid)
        sent = 0
        while time.monotonic() - started < seconds:
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(GROWTH_TOPIC, payload, partition=sent % partitions)
            sent += 1
            now = time.monotonic()
            if now - window_start >= GROWTH_WINDOW_S:
                spent = cpu_seconds(pid)
                windows.append(
                    {
                        "at_s": round(now - started, 1),
                        "messages_stored": sent,
                        "messages_received": received,
                        "broker_cores": round((spent - window_cpu) / (now - window_start), 3),
                    }
                )
                window_start, window_cpu = now, spent
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await consumer.stop()
        await producer.stop()
    return windows


def _on_broker(base: Settings, bootstrap_servers: str, *, fetch_max_wait_ms: int) -> Settings:
    kafka = base.kafka.model_copy(
        update={"bootstrap_servers": bootstrap_servers, "fetch_max_wait_ms": fetch_max_wait_ms}
    )
    return base.model_copy(update={"kafka": kafka})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", default="100,20,10,5", help="fetch waits (ms) to try")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--every-ms", type=float, default=10.0)
    parser.add_argument("--growth-seconds", type=float, default=60.0, help="0: skip")
    parser.add_argument("--growth-rate", type=float, default=200.0, help="messages/s")
    parser.add_argument("--growth-bytes", type=int, default=50_000, help="bytes per message")
    parser.add_argument("--growth-partitions", type=int, default=8)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    windows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
        base = Settings(_env_file=None, data_dir=Path(tmp))  # type: ignore[call-arg]
        with LocalBroker(base) as local:
            for wait in (int(w) for w in args.waits.split(",")):
                settings = _on_broker(base, local.bootstrap_servers, fetch_max_wait_ms=wait)
                if not results:
                    asyncio.run(ensure_topics(settings, [TopicSpec(TOPIC, 1, 1)]))
                results[str(wait)] = asyncio.run(hop(settings, args.messages, args.every_ms / 1e3))
            if args.growth_seconds > 0:
                settings = _on_broker(base, local.bootstrap_servers, fetch_max_wait_ms=10)
                spec = TopicSpec(GROWTH_TOPIC, args.growth_partitions, 1)
                asyncio.run(ensure_topics(settings, [spec]))
                windows = asyncio.run(
                    growth(
                        settings,
                        local.state.pid,
                        seconds=args.growth_seconds,
                        rate=args.growth_rate,
                        size=args.growth_bytes,
                        partitions=args.growth_partitions,
                    )
                )
    print(
        json.dumps(
            {
                "every_ms": args.every_ms,
                "by_fetch_max_wait_ms": results,
                "growth": {
                    "rate": args.growth_rate,
                    "bytes": args.growth_bytes,
                    "partitions": args.growth_partitions,
                    "windows": windows,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
