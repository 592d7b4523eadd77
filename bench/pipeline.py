"""Whole-pipeline benchmark: producer -> Kafka -> book processor -> Kafka -> sink -> ClickHouse.

    poetry run python -m bench.pipeline [--records 2000000] [--instruments 8] [--workers 1]
                                        [--rate 50000] [--paced-records 500000]
                                        [--chunk-linger-ms MS] [--chunk-records N]

Generates a multi-instrument file with `mbo generate`, then runs `mbo run --until-drained`
twice on the local broker and chDB, exactly as a user would:

* flat out (--max): records/s from the first record sent until every record, BBO change and
  snapshot is committed in ClickHouse;
* paced at --rate: latency from the producer's send of a records message to the processor's
  publication of its BBO/snapshot events (exact, every message), and to the rows being in
  ClickHouse (from the sink's histogram: bucket upper bounds).

Prints one JSON object. Each run's full report is included, with the CPU seconds each process
used (start-up included), which shows where the machine's cores went, and `cost`: per process
CPU-µs per record and its share of the total, the total CPU-µs per record over all processes
(broker included), and the output per record: BBO and snapshot rows, and bytes per topic as
stored by the broker (its log segments: record batches with their headers).
`cost_while_replaying` is the same from the CPU each process used between the first record sent
and the drain only: the pipeline's cost per record without the processes' start-up (imports,
JIT, the broker's boot) and `mbo run`'s report, which a longer replay spreads thinner.
`cpu_seconds_by_phase` has each process's CPU seconds before the first record sent (imports,
the broker's boot, group joins), while replaying, and after the drain (the report, the stop).
`api_sink_threads` splits the API + sink process (which embeds chDB) into its Python threads
and the engine's (threads named by chDB: inserts, merges), whole run and while replaying.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procstat import cpu_seconds, thread_times

MBO = [sys.executable, "-m", "mbo_cli.main"]


def generate(path: Path, records: int, instruments: int, seed: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [*MBO, "generate", "--instruments", str(instruments), "--records", str(records),
         "--seed", str(seed), "-o", str(path)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def run(
    source: Path, work: Path, *pacing: str, workers: int, settings: dict[str, str]
) -> dict[str, Any]:
    report = work / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBO_")}
    env.update(settings)
    process = subprocess.Popen(
        [*MBO, "run", "--replay", str(source), *pacing, "--workers", str(workers),
         "--until-drained", "--data-dir", str(work / "data"), "--report", str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    samples, split = _watch_cpu(process)
    if process.returncode != 0:
        raise SystemExit(f"mbo run failed ({process.returncode}); see {work / 'data' / 'run'}")
    figures: dict[str, Any] = json.loads(report.read_text())
    cpu = _totals(samples)
    figures["cpu_seconds"] = cpu
    topic_bytes = _topic_bytes(work / "data")
    figures["cost"] = cost(figures, cpu, topic_bytes)
    begin = figures["producer"]["first_sent_ns"] / 1e9
    window = (begin, begin + figures["seconds"])
    replaying = _totals(samples, window=window)
    figures["cost_while_replaying"] = cost(figures, replaying, topic_bytes)
    figures["cpu_seconds_by_phase"] = {
        "before_first_send": _totals(samples, window=(0.0, window[0])),
        "replaying": replaying,
        "after_drain": _totals(samples, window=(window[1], float("inf"))),
    }
    records = max(int(figures["records"]), 1)
    figures["api_sink_threads"] = {
        "cpu_seconds": _split_totals(split),
        "cpu_us_per_record_while_replaying": {
            name: round(seconds / records * 1e6, 2)
            for name, seconds in _split_totals(split, window=window).items()
        },
    }
    return figures


def cost(
    figures: dict[str, Any], cpu: dict[str, float], topic_bytes: dict[str, int]
) -> dict[str, Any]:
    """CPU-µs per record by process and in all, and what each record turned into."""
    records = max(int(figures["records"]), 1)
    total = sum(cpu.values())
    rows = figures["rows"]
    return {
        "total_cpu_us_per_record": round(total / records * 1e6, 2),
        "cpu_us_per_record": {name: round(s / records * 1e6, 2) for name, s in cpu.items()},
        "share": {name: round(s / total, 3) if total else 0.0 for name, s in cpu.items()},
        "bbo_rows_per_record": round(rows["bbo"] / records, 4),
        "snapshot_rows_per_record": round(rows["book_snapshots"] / records, 4),
        "topic_bytes_per_record": {t: round(b / records, 1) for t, b in topic_bytes.items()},
    }


def _topic_bytes(data_dir: Path) -> dict[str, int]:
    """Bytes in the local broker's log segments per topic (internal topics left out)."""
    sizes: dict[str, int] = {}
    for partition in (data_dir / "kafka" / "data").glob("*-[0-9]*"):
        topic = partition.name.rsplit("-", 1)[0]
        if topic.startswith("__") or not partition.is_dir():
            continue
        sizes[topic] = sizes.get(topic, 0) + sum(f.stat().st_size for f in partition.glob("*.log"))
    return dict(sorted(sizes.items()))


#: Per process: its stage name and (wall-clock time, CPU seconds so far) samples.
Samples = dict[int, tuple[str, list[tuple[float, float]]]]
#: Per (process, part of it): (wall-clock time, CPU seconds so far) samples.
SplitSamples = dict[tuple[int, str], list[tuple[float, float]]]
#: Per process: every thread seen so far, whether it is Python's, and its CPU seconds when last
#: seen (threads end before their process: the engine's pools at shutdown).
ThreadsSeen = dict[int, dict[int, tuple[bool, float]]]


#: The process whose threads are split into Python's and the engine's (API and sink share it
#: with chDB, whose insert and merge threads are its largest term).
SPLIT_STAGE = "api+sink"


def _watch_cpu(process: subprocess.Popen[bytes]) -> tuple[Samples, SplitSamples]:
    """CPU seconds (user + system) of each process of the run, sampled every 0.2 s from /proc
    until the run ends, so it shows where the two cores went: the stages, the broker and
    `mbo run` itself; and, apart, the API + sink process's CPU split into its Python threads
    and chDB's (bench.procstat.thread_times). Empty where there is no /proc.
    """
    seen: Samples = {}
    split: SplitSamples = {}
    threads_seen: ThreadsSeen = {}
    while process.poll() is None:
        now = time.time()
        for pid in [process.pid, *_descendants(process.pid)]:
            try:
                seconds = cpu_seconds(pid)
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            name = _stage_name(argv)
            if pid in seen and name == "?":  # exited: its command line is gone, its name is not
                name = seen[pid][0]
            history = seen[pid][1] if pid in seen else []
            history.append((now, seconds))
            seen[pid] = (name, history)
            if name == SPLIT_STAGE:
                _sample_split(split, threads_seen, pid, now)
        time.sleep(0.2)
    return seen, split


def _sample_split(split: SplitSamples, threads_seen: ThreadsSeen, pid: int, now: float) -> None:
    try:
        name, threads = thread_times(pid)
    except OSError:
        return
    seen = threads_seen.setdefault(pid, {})
    for tid, (thread, seconds) in threads.items():
        seen[tid] = (thread == name, seconds)
    python = sum(seconds for own, seconds in seen.values() if own)
    engine = sum(seconds for own, seconds in seen.values() if not own)
    split.setdefault((pid, "python"), []).append((now, python))
    split.setdefault((pid, "chdb"), []).append((now, engine))


def _split_totals(
    split: SplitSamples, window: tuple[float, float] | None = None
) -> dict[str, float]:
    as_samples: Samples = {i: (part, h) for i, ((_, part), h) in enumerate(split.items())}
    return _totals(as_samples, window)


def _totals(samples: Samples, window: tuple[float, float] | None = None) -> dict[str, float]:
    """CPU seconds by stage: all of each process's (start-up included), or only what it used
    within the wall-clock window (linear between samples; 0 before a process's first)."""

    def at(history: list[tuple[float, float]], t: float) -> float:
        if t <= history[0][0]:
            return 0.0 if t < history[0][0] else history[0][1]
        for (t0, c0), (t1, c1) in itertools.pairwise(history):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / max(t1 - t0, 1e-9)
        return history[-1][1]

    totals: dict[str, float] = {}
    for name, history in samples.values():
        used = history[-1][1] if window is None else at(history, window[1]) - at(history, window[0])
        totals[name] = round(totals.get(name, 0.0) + used, 2)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def _stage_name(argv: list[bytes]) -> str:
    # A stage forked by mbo run's fork server has its command line as one title string.
    words = b" ".join(argv).decode(errors="replace").split()
    if "mbo_cli.forkserver" in words:
        return "fork server"
    if "mbo_cli.main" in words:
        stage = words[words.index("mbo_cli.main") + 1 :]
        name = stage[0] if stage else "mbo"
        if name == "api" and "--with-sink" in stage:
            return "api+sink"
        return "mbo run" if name == "run" else name
    if "kafka.Kafka" in words or "kafka.tools.StorageTool" in words:
        return "broker"  # the storage format at the first start is the broker's cost too
    return Path(words[0]).name.split("-")[0] if words else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--instruments", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rate", type=int, default=50_000)
    parser.add_argument("--paced-records", type=int, default=500_000)
    parser.add_argument(
        "--chunk-linger-ms",
        type=float,
        default=None,
        help="producer linger (MBO_PIPELINE__CHUNK_LINGER_MS; default: the setting's, 50 ms)",
    )
    parser.add_argument(
        "--chunk-records",
        type=int,
        default=None,
        help="most records per records message (MBO_PIPELINE__CHUNK_RECORDS; default: the "
        "setting's)",
    )
    parser.add_argument(
        "--compression",
        default=None,
        help="Kafka producer compression of every stage (MBO_KAFKA__COMPRESSION_TYPE; default: "
        "the setting's)",
    )
    parser.add_argument(
        "--broker-jvm-options",
        default=None,
        help="extra JVM options of the local broker (MBO_BROKER__JVM_OPTIONS)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mbo-bench-") as tmp:
        work = Path(tmp)
        big, paced = work / "flat.dbn.zst", work / "paced.dbn.zst"
        generate(big, args.records, args.instruments, seed=1)
        generate(paced, args.paced_records, args.instruments, seed=2)
        settings = {}
        if args.chunk_linger_ms is not None:
            settings["MBO_PIPELINE__CHUNK_LINGER_MS"] = str(args.chunk_linger_ms)
        if args.chunk_records is not None:
            settings["MBO_PIPELINE__CHUNK_RECORDS"] = str(args.chunk_records)
        if args.broker_jvm_options is not None:
            settings["MBO_BROKER__JVM_OPTIONS"] = args.broker_jvm_options
        if args.compression is not None:
            settings["MBO_KAFKA__COMPRESSION_TYPE"] = args.compression
        flat = run(big, work / "flat", "--max", workers=args.workers, settings=settings)
        slow = run(paced, work / "paced", "--rate", str(args.rate), workers=args.workers,
                   settings=settings)  # fmt: skip
    print(
        json.dumps(
            {
                "cores": os.cpu_count(),
                "workers": args.workers,
                "instruments": args.instruments,
                "chunk_linger_ms": args.chunk_linger_ms,
                "chunk_records": args.chunk_records,
                "compression": args.compression,
                "broker_jvm_options": args.broker_jvm_options,
                "flat_out": {
                    "records": flat["records"],
                    "seconds": flat["seconds"],
                    "records_per_s": flat["records_per_s"],
                    "rows": flat["rows"],
                    "cpu_seconds": flat["cpu_seconds"],
                    "cost": flat["cost"],
                    "cost_while_replaying": flat["cost_while_replaying"],
                    "cpu_seconds_by_phase": flat["cpu_seconds_by_phase"],
                    "api_sink_threads": flat["api_sink_threads"],
                },
                "paced": {
                    "target_rate": args.rate,
                    "records": slow["records"],
                    "producer_records_per_s": round(slow["producer"].get("records_per_s", 0)),
                    "send_to_event_ms": slow["latency_ms"]["send_to_event"],
                    "send_to_clickhouse_ms": slow["latency_ms"]["send_to_clickhouse"],
                    "cpu_seconds": slow["cpu_seconds"],
                    "cost": slow["cost"],
                    "cost_while_replaying": slow["cost_while_replaying"],
                },
                "reports": {"flat_out": flat, "paced": slow},
            }
        )
    )


if __name__ == "__main__":
    main()
