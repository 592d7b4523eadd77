"""Book-engine benchmark: apply throughput on one core and top-10 snapshot latency.

    poetry run python -m bench.engine [--records 5000000] [--file F | --generated N] [--compare]

Input: the records of FILE (default: the CLX5 sample) repeated, with a Clear (R, F_LAST) of each
book between copies so every copy starts from an empty book, until --records; or, with
--generated N, a stream of --records records over N instruments from the market generator.
Prints JSON:
records, seconds, records_per_s (apply only, whole stream, one core), snapshot_p50_us /
snapshot_p99_us (one `engine.view(book, 10)`: top 10 levels of both sides plus ids and
data-quality counters, taken after every event of the first 500k records).
gate_records_per_s / gate_cost_ns_per_record: mbo_core.book.events.EventGate alone over the
stream in 8,192-record batches (the order `mbo book` and the processor apply records in: whole
events at their F_LAST), and replay_records_per_s: BookEngine.apply of the gated batches, i.e.
what `mbo book` does without output. --publishers P (with --generated) interleaves P
publishers per instrument, where the gate has to reorder.
--compare adds the pure-Python reference book of the tests (dicts and lists) on 200k records.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mbo_core.book import F_LAST, BookEngine
from mbo_core.book.events import EventGate
from mbo_core.dbn import open_mbo
from mbo_core.records import MBO_DTYPE
from tests.reference_book import RefBook

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "CLX5_mbo.dbn"
SNAPSHOT_SAMPLE = 500_000
COMPARE_SAMPLE = 200_000


def repeated_stream(path: Path, target: int) -> np.ndarray:
    base = np.concatenate(list(open_mbo(path).batches()))
    books = np.unique(base[["instrument_id", "publisher_id"]])
    clears = np.zeros(len(books), dtype=MBO_DTYPE)
    clears["length"], clears["rtype"] = base["length"][0], base["rtype"][0]
    clears["instrument_id"] = books["instrument_id"]
    clears["publisher_id"] = books["publisher_id"]
    clears["action"], clears["side"], clears["flags"] = ord("R"), ord("N"), F_LAST
    unit = np.concatenate([base, clears])
    copies = -(-target // len(unit))
    return np.tile(unit, copies)[:target]


def generated_stream(instruments: int, records: int, publishers: int = 1) -> np.ndarray:
    from generator.api import generate_records  # noqa: PLC0415 (compiles the generator)
    from generator.core import GeneratorConfig  # noqa: PLC0415

    config = GeneratorConfig(
        instruments=instruments, records=records, seed=1, publishers=publishers
    )
    return np.concatenate(list(generate_records(config)))


def measure_apply(records: np.ndarray) -> float:
    BookEngine().apply(records[:1000])  # load the compiled kernel before timing
    engine = BookEngine()
    start = time.perf_counter()
    engine.apply(records)
    return time.perf_counter() - start


def measure_gate(records: np.ndarray, batch: int = 8192) -> tuple[float, float]:
    """(seconds of EventGate.feed alone, seconds of feed + BookEngine.apply) over the stream."""
    batches = [records[i : i + batch] for i in range(0, len(records), batch)]
    gate = EventGate()
    start = time.perf_counter()
    for part in batches:
        gate.feed(part)
    gated = time.perf_counter() - start
    gate, engine = EventGate(), BookEngine()
    engine.apply(records[:0])
    start = time.perf_counter()
    for part in batches:
        engine.apply(gate.feed(part)[0])
    return gated, time.perf_counter() - start


def measure_snapshots(records: np.ndarray) -> np.ndarray:
    engine = BookEngine()
    timings = []
    clock = time.perf_counter_ns
    for book in engine.apply_events(records[:SNAPSHOT_SAMPLE]):
        t0 = clock()
        engine.view(book, 10)
        timings.append(clock() - t0)
    return np.array(timings[100:], dtype=np.float64) / 1000.0  # first calls warm caches


def measure_reference(records: np.ndarray) -> float:
    sample = records[:COMPARE_SAMPLE]
    rows = zip(
        sample["action"].tolist(),
        sample["side"].tolist(),
        sample["price"].tolist(),
        sample["size"].tolist(),
        sample["order_id"].tolist(),
        sample["flags"].tolist(),
        strict=True,
    )
    books: dict[tuple[int, int], RefBook] = {}
    keys = list(zip(sample["instrument_id"].tolist(), sample["publisher_id"].tolist(), strict=True))
    start = time.perf_counter()
    for key, (action, side, price, size, order_id, flags) in zip(keys, rows, strict=True):
        book = books.get(key) or books.setdefault(key, RefBook())
        book.apply(chr(action), chr(side), price, size, order_id, flags)
    return len(sample) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument(
        "--generated", type=int, default=0, metavar="N", help="generated stream of N instruments"
    )
    parser.add_argument("--publishers", type=int, default=1, help="with --generated")
    parser.add_argument("--compare", action="store_true", help="also time the reference book")
    args = parser.parse_args()

    records = (
        generated_stream(args.generated, args.records, args.publishers)
        if args.generated
        else repeated_stream(args.file, args.records)
    )
    seconds = measure_apply(records)
    gated, replayed = measure_gate(records)
    snapshots = measure_snapshots(records)
    figures: dict[str, object] = {
        "input": f"generated, {args.generated} instruments" if args.generated else str(args.file),
        "records": len(records),
        "seconds": round(seconds, 3),
        "records_per_s": round(len(records) / seconds),
        "publishers": args.publishers if args.generated else None,
        "gate_records_per_s": round(len(records) / gated),
        "gate_cost_ns_per_record": round(gated / len(records) * 1e9, 1),
        "replay_records_per_s": round(len(records) / replayed),
        "snapshot_p50_us": round(float(np.percentile(snapshots, 50)), 2),
        "snapshot_p99_us": round(float(np.percentile(snapshots, 99)), 2),
        "snapshots": len(snapshots),
    }
    if args.compare:
        figures["reference_python_records_per_s"] = round(measure_reference(records))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
