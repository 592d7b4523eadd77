"""What other code calls: generate a DBN file (and its true final books), or records in memory."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from generator.core import GeneratorConfig, MarketSimulator
from generator.dbn_writer import DbnWriter, encode_metadata, is_compressed_path
from generator.expect import final_json

#: on_progress(records_done, records_total), after each chunk written.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class GenerationResult:
    path: Path
    records: int
    events: int
    bytes: int
    seconds: float
    #: The true final books, as `mbo book <path> -o` reports them (source = str(path)).
    final: dict[str, Any]


def generate_records(config: GeneratorConfig) -> Iterator[np.ndarray]:
    """The stream in memory: MBO_DTYPE chunks of whole events, sorted by ts_recv."""
    return MarketSimulator(config).chunks()


def generate_file(
    path: Path | str,
    config: GeneratorConfig,
    *,
    depth: int = 10,
    expect: Path | str | None = None,
    on_progress: ProgressCallback | None = None,
) -> GenerationResult:
    """Write `config.records` records to `path` (.dbn or .dbn.zst, replaced atomically) and,
    with `expect`, the true final books as JSON (top `depth` levels, 0 = all) there too.

    ValueError for a bad path name; OSError when the directory cannot be written.
    """
    path = Path(path)
    is_compressed_path(path)
    started = time.perf_counter()
    simulator = MarketSimulator(config)
    symbols = [(spec.symbol, spec.instrument_id) for spec in simulator.instruments]

    def metadata(end_ns: int) -> bytes:
        return encode_metadata(
            dataset=config.dataset, start_ns=config.start_ns, end_ns=end_ns, symbols=symbols
        )

    with DbnWriter(path, metadata(config.start_ns + 1)) as writer:
        for chunk in simulator.chunks():
            writer.write(chunk)
            if on_progress is not None:
                on_progress(simulator.records, config.records)
        size = writer.finish(metadata(simulator.last_ts_recv() + 1))
    final = final_json(
        simulator.book_states(0),
        source=str(path),
        records=simulator.records,
        events=simulator.events,
        depth=depth,
    )
    if expect is not None:
        write_json_atomically(Path(expect), final)
    return GenerationResult(
        path=path,
        records=simulator.records,
        events=simulator.events,
        bytes=size,
        seconds=time.perf_counter() - started,
        final=final,
    )


def write_json_atomically(path: Path, value: Any) -> None:
    """JSON (indent 1, like `mbo book -o`) under a temporary name next to `path`, then renamed."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(value, out, indent=1)
            out.write("\n")
        temp.chmod(0o644)
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
