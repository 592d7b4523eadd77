"""One Kafka hop's latency against the consumer's fetch wait, on the local broker.

    poetry run python -m bench.broker [--waits 100,20,10,5] [--messages 300] [--every-ms 10]

Starts the local broker (tansu) in a temporary data dir and, for each MBO_KAFKA__FETCH_MAX_WAIT_MS
value, sends --messages small messages one every --every-ms with an aiokafka producer (linger
0) and receives them with a plain aiokafka consumer: latency from send to receipt, p50/p90/p99.
On Apache Kafka a held fetch is answered as soon as data arrives; the local broker answers when
the wait runs out, which makes the wait a floor under every hop (docs/infrastructure.md).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mbo_core.broker import LocalBroker
from mbo_core.kafka import make_consumer, make_producer
from mbo_core.settings import Settings
from mbo_core.topics import TopicSpec, ensure_topics

TOPIC = "bench.hop"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", default="100,20,10,5", help="fetch waits (ms) to try")
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--every-ms", type=float, default=10.0)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
        base = Settings(_env_file=None, data_dir=Path(tmp))  # type: ignore[call-arg]
        with LocalBroker(base) as local:
            for wait in (int(w) for w in args.waits.split(",")):
                settings = base.model_copy(
                    update={
                        "kafka": base.kafka.model_copy(
                            update={
                                "bootstrap_servers": local.bootstrap_servers,
                                "fetch_max_wait_ms": wait,
                            }
                        )
                    }
                )
                if not results:
                    asyncio.run(ensure_topics(settings, [TopicSpec(TOPIC, 1, 1)]))
                results[str(wait)] = asyncio.run(hop(settings, args.messages, args.every_ms / 1e3))
    print(json.dumps({"every_ms": args.every_ms, "by_fetch_max_wait_ms": results}))


if __name__ == "__main__":
    main()
