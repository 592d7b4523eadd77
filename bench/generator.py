"""Benchmark of `mbo generate`'s engine: writes a synthetic DBN file into a temporary directory and
prints one JSON line: {"records", "seconds", "records_per_s", "bytes", ...}.

    poetry run python -m bench.generator          # 10M records, 10 instruments, .dbn.zst
    poetry run python -m bench.generator --records 1M --publishers 3 --plain

(As a module: run as a script, this file's name would shadow the `generator` package.)

The timing covers everything `mbo generate` does after start-up: simulation, DBN encoding,
zstd compression and the rename; the first run after a code change also pays numba's compile.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from generator.api import generate_file
from generator.core import GeneratorConfig


def _count(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    return int(text.rstrip("kKmM").replace("_", "")) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=_count, default=10_000_000, help="default 10M")
    parser.add_argument("--instruments", type=int, default=10)
    parser.add_argument("--publishers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain", action="store_true", help="write .dbn instead of .dbn.zst")
    args = parser.parse_args()
    config = GeneratorConfig(
        instruments=args.instruments,
        records=args.records,
        publishers=args.publishers,
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="mbo-bench-") as tmp:
        path = Path(tmp) / ("bench.dbn" if args.plain else "bench.dbn.zst")
        result = generate_file(path, config)
    print(
        json.dumps(
            {
                "records": result.records,
                "seconds": round(result.seconds, 3),
                "records_per_s": round(result.records / result.seconds),
                "bytes": result.bytes,
                "events": result.events,
                "instruments": args.instruments,
                "publishers": args.publishers,
                "file": path.name,
            }
        )
    )


if __name__ == "__main__":
    main()
