"""Producer benchmark: flat-out throughput and how closely `--rate` holds its target.

    poetry run python -m bench.producer [--file F] [--records 2000000] [--seconds 5]
                                        [--targets 50000,200000,500000]

Starts its own local broker (Apache Kafka) in a temporary data dir and stops it at the
end. Input: FILE (default: the CLX5 sample) replayed with --loop (a Clear of each book between
copies) to at least --records records flat out, then for each target rate enough copies for
about --seconds at that rate. Each run writes to its own topic. Prints JSON:

    {"max_records_per_s", "max": {records, messages, seconds},
     "rate_targets": [{"target", "achieved", "error_pct", "records", "seconds"}, ...]}

achieved = records delivered / seconds from the start of the replay to the last delivery
(`ProduceSummary.records_per_s`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from mbo_core.dbn import open_mbo
from mbo_core.kafka.broker import LocalBroker
from mbo_core.settings import Settings, load_settings
from producer.app import ProduceSummary, produce_file

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "CLX5_mbo.dbn"


def _settings(data_dir: Path, bootstrap: str | None = None, topic: str = "bench") -> Settings:
    kafka = {"bootstrap_servers": bootstrap} if bootstrap else {}
    return load_settings(
        env_file=None,
        secrets_dir=None,
        data_dir=data_dir,
        kafka=kafka,
        topics={
            "records": {"name": f"{topic}.records"},
            "bbo": {"name": f"{topic}.bbo"},
            "snapshots": {"name": f"{topic}.snapshots"},
        },
    )


def _records_in(path: Path) -> int:
    source = open_mbo(path)
    if source.record_count is not None:
        return source.record_count
    return sum(len(batch) for batch in source.batches())


def _run(settings: Settings, path: Path, *, loops: int, rate: float | None) -> ProduceSummary:
    return asyncio.run(produce_file(settings, path, rate=rate, loops=loops))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--targets", default="50000,200000,500000")
    args = parser.parse_args()
    targets = [float(value) for value in args.targets.split(",") if value]
    per_copy = _records_in(args.file)

    with tempfile.TemporaryDirectory(prefix="mbo-bench-producer-") as tmp:
        data_dir = Path(tmp)
        with LocalBroker(_settings(data_dir)) as local:
            servers = local.bootstrap_servers
            flat_out = _run(
                _settings(data_dir, servers, "bench-max"),
                args.file,
                loops=math.ceil(args.records / per_copy),
                rate=None,
            )
            paced: list[dict[str, Any]] = []
            for index, target in enumerate(targets):
                summary = _run(
                    _settings(data_dir, servers, f"bench-rate-{index}"),
                    args.file,
                    loops=max(1, math.ceil(target * args.seconds / per_copy)),
                    rate=target,
                )
                achieved = summary.records_per_s
                paced.append(
                    {
                        "target": target,
                        "achieved": round(achieved, 1),
                        "error_pct": round((achieved - target) / target * 100, 3),
                        "records": summary.records_sent,
                        "messages": summary.messages,
                        "seconds": round(summary.seconds, 3),
                    }
                )
    print(
        json.dumps(
            {
                "file": str(args.file),
                "max_records_per_s": round(flat_out.records_per_s, 1),
                "max": {
                    "records": flat_out.records_sent,
                    "messages": flat_out.messages,
                    "seconds": round(flat_out.seconds, 3),
                },
                "rate_targets": paced,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
