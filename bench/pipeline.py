"""Whole-pipeline benchmark: producer -> Kafka -> book processor -> Kafka -> sink -> ClickHouse.

    poetry run python -m bench.pipeline [--records 2000000] [--instruments 8] [--workers 1]
                                        [--rate 50000] [--paced-records 500000]
                                        [--chunk-linger-ms MS]

Generates a multi-instrument file with `mbo generate`, then runs `mbo run --until-drained`
twice on the local broker and chDB, exactly as a user would:

* flat out (--max): records/s from the first record sent until every record, BBO change and
  snapshot is committed in ClickHouse;
* paced at --rate: latency from the producer's send of a records message to the processor's
  publication of its BBO/snapshot events (exact, every message), and to the rows being in
  ClickHouse (from the sink's histogram: bucket upper bounds).

Prints one JSON object. Each run's full report is included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
    source: Path, work: Path, *pacing: str, workers: int, linger_ms: float | None
) -> dict[str, Any]:
    report = work / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBO_")}
    if linger_ms is not None:
        env["MBO_PIPELINE__CHUNK_LINGER_MS"] = str(linger_ms)
    subprocess.run(
        [*MBO, "run", "--replay", str(source), *pacing, "--workers", str(workers),
         "--until-drained", "--data-dir", str(work / "data"), "--report", str(report)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    figures: dict[str, Any] = json.loads(report.read_text())
    return figures


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
        help="producer linger (MBO_PIPELINE__CHUNK_LINGER_MS; default: the setting's, 2 ms)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mbo-bench-") as tmp:
        work = Path(tmp)
        big, paced = work / "flat.dbn.zst", work / "paced.dbn.zst"
        generate(big, args.records, args.instruments, seed=1)
        generate(paced, args.paced_records, args.instruments, seed=2)
        linger = args.chunk_linger_ms
        flat = run(big, work / "flat", "--max", workers=args.workers, linger_ms=linger)
        slow = run(paced, work / "paced", "--rate", str(args.rate), workers=args.workers,
                   linger_ms=linger)  # fmt: skip
    print(
        json.dumps(
            {
                "cores": os.cpu_count(),
                "workers": args.workers,
                "instruments": args.instruments,
                "chunk_linger_ms": args.chunk_linger_ms,
                "flat_out": {
                    "records": flat["records"],
                    "seconds": flat["seconds"],
                    "records_per_s": flat["records_per_s"],
                    "rows": flat["rows"],
                },
                "paced": {
                    "target_rate": args.rate,
                    "records": slow["records"],
                    "producer_records_per_s": round(slow["producer"].get("records_per_s", 0)),
                    "send_to_event_ms": slow["latency_ms"]["send_to_event"],
                    "send_to_clickhouse_ms": slow["latency_ms"]["send_to_clickhouse"],
                },
                "reports": {"flat_out": flat, "paced": slow},
            }
        )
    )


if __name__ == "__main__":
    main()
