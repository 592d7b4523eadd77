"""The local broker's one-hop latency, its CPU per pipeline record, and how that CPU grows with
what it stores.

    poetry run python -m bench.broker [--waits 500,100,10] [--messages 1000] [--warmup 200]
                                      [--every-ms 10]
                                      [--throughput-messages 2000] [--records-per-message 1024]
                                      [--growth-seconds 60] [--growth-rate 200]
                                      [--growth-bytes 50000] [--growth-partitions 8]

Starts the local broker (Apache Kafka, mbo_core.kafka.broker) in a temporary data dir, then:

1. hop: for each MBO_KAFKA__FETCH_MAX_WAIT_MS value, sends --messages small messages one every
   --every-ms with an aiokafka producer (linger 0) and receives them with a plain aiokafka
   consumer: latency from send to receipt, p50/p90/p99, after --warmup messages that are not
   counted (the JVM compiles its hot paths during the first ones). Kafka answers a held fetch as
   soon as data arrives, so the wait should not show in the latency (tansu, the broker before,
   answered only when the wait ran out: docs/infrastructure.md).
2. throughput: --throughput-messages messages of --records-per-message 56-byte records (the
   pipeline's records messages) produced flat out over 8 partitions and consumed once: the
   broker's CPU-µs per record and per message, and records/s.
3. growth (--growth-seconds > 0): a producer sends --growth-rate messages/s of --growth-bytes
   each, round-robin over --growth-partitions partitions, and one consumer (10 ms fetch wait)
   follows: the broker's CPU (cores) in each 5 s window at constant traffic, against the
   messages it holds. A broker whose cost per request grows with what it stores slows a long
   run of the pipeline down by itself (tansu's memory storage did).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.procstat import cpu_seconds
from mbo_core.kafka.broker import LocalBroker, kafka_version
from mbo_core.kafka.clients import make_consumer, make_producer
from mbo_core.kafka.topics import TopicSpec, ensure_topics
from mbo_core.settings import Settings

TOPIC = "bench.hop"
THROUGHPUT_TOPIC = "bench.throughput"
THROUGHPUT_PARTITIONS = 8
RECORD_BYTES = 56
GROWTH_TOPIC = "bench.growth"
GROWTH_WINDOW_S = 5.0


async def hop(settings: Settings, messages: int, every_s: float, warmup: int) -> dict[str, Any]:
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
        del received[:warmup]
    finally:
        await consumer.stop()
        await producer.stop()
    latency = np.array(received)
    p50, p90, p99 = (round(float(np.percentile(latency, q)), 2) for q in (50, 90, 99))
    return {"received": len(latency), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99}


async def throughput(
    settings: Settings, pid: int, *, messages: int, records_per_message: int
) -> dict[str, Any]:
    """Broker CPU while `messages` records messages are produced flat out and consumed once."""
    producer = make_producer(settings, "bench-throughput")
    consumer = make_consumer(settings, "bench-throughput", THROUGHPUT_TOPIC, group_id=None)
    value = b"r" * (RECORD_BYTES * records_per_message)
    await producer.start()
    await consumer.start()
    try:
        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        deliveries = [
            await producer.send(
                THROUGHPUT_TOPIC, value, key=b"%d" % i, partition=i % THROUGHPUT_PARTITIONS
            )
            for i in range(messages)
        ]
        await asyncio.gather(*deliveries)
        produced_s = time.perf_counter() - started
        received = 0
        deadline = time.monotonic() + 300
        while received < messages and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            received += sum(len(batch) for batch in batches.values())
        seconds = time.perf_counter() - started
        broker_cpu = cpu_seconds(pid) - cpu_before
    finally:
        await consumer.stop()
        await producer.stop()
    records = messages * records_per_message
    return {
        "messages": messages,
        "records": records,
        "received_messages": received,
        "produce_records_per_s": round(records / produced_s),
        "produce_and_consume_records_per_s": round(records / seconds),
        "broker_cpu_seconds": round(broker_cpu, 3),
        "broker_cpu_us_per_record": round(broker_cpu / records * 1e6, 3),
        "broker_cpu_us_per_message": round(broker_cpu / messages * 1e6, 1),
    }


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


def _on_broker(
    base: Settings, bootstrap_servers: str, *, fetch_max_wait_ms: int, topic: TopicSpec | None
) -> Settings:
    """Settings pointing at the bench's broker, with `topic` created there first (unless None)."""
    kafka = base.kafka.model_copy(
        update={"bootstrap_servers": bootstrap_servers, "fetch_max_wait_ms": fetch_max_wait_ms}
    )
    settings = base.model_copy(update={"kafka": kafka})
    if topic is not None:
        asyncio.run(ensure_topics(settings, [topic]))
    return settings


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", default="500,100,10", help="fetch waits (ms) to try")
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200, help="hop messages not counted")
    parser.add_argument("--every-ms", type=float, default=10.0)
    parser.add_argument("--throughput-messages", type=int, default=2000, help="0: skip")
    parser.add_argument("--records-per-message", type=int, default=1024)
    parser.add_argument("--growth-seconds", type=float, default=60.0, help="0: skip")
    parser.add_argument("--growth-rate", type=float, default=200.0, help="messages/s")
    parser.add_argument("--growth-bytes", type=int, default=50_000, help="bytes per message")
    parser.add_argument("--growth-partitions", type=int, default=8)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    flat_out: dict[str, Any] = {}
    windows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
        base = Settings(_env_file=None, data_dir=Path(tmp))  # type: ignore[call-arg]
        started_at = time.time()
        with LocalBroker(base) as local:
            for wait in (int(w) for w in args.waits.split(",")):
                hop_topic = None if results else TopicSpec(TOPIC, 1, 1)
                settings = _on_broker(
                    base, local.bootstrap_servers, fetch_max_wait_ms=wait, topic=hop_topic
                )
                results[str(wait)] = asyncio.run(
                    hop(settings, args.messages + args.warmup, args.every_ms / 1e3, args.warmup)
                )
            started_s = local.state.started_at - started_at
            rss_mib = _rss_mib(local.state.pid)
            if args.throughput_messages > 0:
                spec = TopicSpec(THROUGHPUT_TOPIC, THROUGHPUT_PARTITIONS, 1)
                settings = _on_broker(
                    base, local.bootstrap_servers, fetch_max_wait_ms=500, topic=spec
                )
                flat_out = asyncio.run(
                    throughput(
                        settings,
                        local.state.pid,
                        messages=args.throughput_messages,
                        records_per_message=args.records_per_message,
                    )
                )
            if args.growth_seconds > 0:
                spec = TopicSpec(GROWTH_TOPIC, args.growth_partitions, 1)
                settings = _on_broker(
                    base, local.bootstrap_servers, fetch_max_wait_ms=10, topic=spec
                )
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
            # Back after kill -9, with everything above stored: log recovery and re-registration.
            os.kill(local.state.pid, signal.SIGKILL)
            while local.exit_code() is None:
                time.sleep(0.01)
            killed_at = time.monotonic()
            local.restart_if_exited()
            restart_s = time.monotonic() - killed_at
    print(
        json.dumps(
            {
                "broker": f"Apache Kafka {kafka_version(base)}",
                "restart_after_kill_9_seconds": round(restart_s, 2),
                "start_seconds": round(started_s, 2),
                "rss_mib_after_start": rss_mib,
                "every_ms": args.every_ms,
                "by_fetch_max_wait_ms": results,
                "throughput": flat_out,
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
