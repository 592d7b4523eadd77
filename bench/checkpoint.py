"""What a processor checkpoint saves: rebuild speed from offset 0, and a checkpoint's cost.

    poetry run python -m bench.checkpoint [--records 2000000] [--instruments 8]

Input: --records generated records over --instruments instruments (the market generator), cut
into records messages by the producer's own Chunker (MBO_PIPELINE__CHUNK_RECORDS per message).
All of them go through one BookPublisher, as a rebuild from offset 0 of one partition does
without Kafka: records/s. Then one checkpoint of the final publisher (book_processor.checkpoint):
bytes, time to encode it on the agent's loop (the code hash, computed once per process, not
counted), time to load it. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.engine import generated_stream
from book_processor.app import publisher_options, warm_up
from book_processor.checkpoint import CheckpointStore, code_version, fingerprint
from book_processor.publishing import BookPublisher
from mbo_core.settings import Settings
from mbo_core.wire import instrument_key, records_headers
from producer.app import chunk_bound
from producer.chunking import Chunker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--instruments", type=int, default=8)
    args = parser.parse_args()

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    chunker = Chunker(chunk_bound(settings))
    chunks = chunker.feed(generated_stream(args.instruments, args.records)) + chunker.flush()
    messages = [
        (instrument_key(c.instrument_id), c.records.tobytes(),
         records_headers(dataset="BENCH", symbol=None, sent_ns=1, records=len(c)))
        for c in chunks
    ]  # fmt: skip
    warm_up()
    publisher = BookPublisher(0, **publisher_options(settings))
    started = time.perf_counter()
    records = sum(
        publisher.process(offset, key, value, headers).records
        for offset, (key, value, headers) in enumerate(messages)
    )
    rebuild_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as tmp:
        store = CheckpointStore(Path(tmp), "bench.records")
        code_version()  # hashed once per process, not per checkpoint
        started = time.perf_counter()
        content = store.encode(publisher, fingerprint(*messages[-1]))
        encode_s = time.perf_counter() - started
        store.write(0, publisher.next_offset, content)
        started = time.perf_counter()
        loaded = store.load(
            0,
            publisher.next_offset,
            snapshot_interval_ns=publisher.snapshot_interval_ns,
            snapshot_depth=publisher.snapshot_depth,
        )
        load_s = time.perf_counter() - started
    assert loaded is not None
    print(
        json.dumps(
            {
                "records": records,
                "messages": len(messages),
                "instruments": args.instruments,
                "rebuild_records_per_s": round(records / rebuild_s),
                "checkpoint_bytes": len(content),
                "checkpoint_encode_ms": round(encode_s * 1000, 2),
                "checkpoint_load_ms": round(load_s * 1000, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
