"""The generator's true final books agree exactly with the book engine's replay of its files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generator.api import generate_file, generate_records
from generator.core import GeneratorConfig
from mbo_core.dbn import open_mbo
from mbo_core.rebuild import rebuild_batches
from tests.generator.streams import BUSY_FLOW


def replayed(path: Path, depth: int) -> dict[str, object]:
    """`mbo book PATH -o` in process: the engine's final books of the file."""
    source = open_mbo(path)
    return rebuild_batches(
        source.batches(), source=str(path), depth=depth, symbols=source.symbols
    ).to_json()


@pytest.mark.parametrize(
    ("name", "config", "depth"),
    [
        ("one.dbn.zst", GeneratorConfig(instruments=1, records=120_000, seed=1), 10),
        ("many.dbn.zst", GeneratorConfig(instruments=7, publishers=3, records=90_000, seed=2), 10),
        ("all.dbn", GeneratorConfig(instruments=2, publishers=2, records=50_000, seed=3), 0),
        (
            "busy.dbn",
            GeneratorConfig(instruments=3, publishers=2, records=60_000, seed=4, flow=BUSY_FLOW),
            5,
        ),
        ("tiny.dbn", GeneratorConfig(instruments=5, publishers=4, records=33, seed=5), 10),
    ],
)
def test_engine_rebuilds_exactly_the_generators_books(
    tmp_path: Path, name: str, config: GeneratorConfig, depth: int
) -> None:
    path = tmp_path / name
    expect = tmp_path / "expect.json"
    result = generate_file(path, config, depth=depth, expect=expect)
    assert json.loads(expect.read_text()) == result.final
    assert replayed(path, depth) == result.final
    final = result.final
    assert final["records"] == config.records == result.records
    assert final["events"] == result.events
    books = final["books"]
    assert all(not b["crossed"] and not b["locked"] for b in books if b["publisher_id"] is not None)
    if config.records > 1_000:  # every book took part, and multi-publisher ones are merged too
        per_publisher = [b for b in books if b["publisher_id"] is not None]
        assert len(per_publisher) == config.instruments * config.publishers
        merged = [b for b in books if b["publisher_id"] is None]
        assert len(merged) == (config.instruments if config.publishers > 1 else 0)
        assert all(len(b["bids"]) == depth for b in per_publisher if depth)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    config = GeneratorConfig(instruments=2, publishers=2, records=30_000, seed=9)
    for suffix in (".dbn.zst", ".dbn"):
        first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
        generate_file(first, config)
        generate_file(second, config)
        assert first.read_bytes() == second.read_bytes()
    other = tmp_path / "c.dbn.zst"
    generate_file(other, GeneratorConfig(instruments=2, publishers=2, records=30_000, seed=10))
    assert other.read_bytes() != (tmp_path / "a.dbn.zst").read_bytes()


def test_the_file_holds_the_in_memory_stream(tmp_path: Path) -> None:
    config = GeneratorConfig(instruments=2, records=10_000, seed=4)
    path = tmp_path / "s.dbn"
    generate_file(path, config)
    (batch,) = list(open_mbo(path).batches())
    assert batch.tobytes() == np.concatenate(list(generate_records(config))).tobytes()


def test_progress_counts_records(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    config = GeneratorConfig(instruments=2, records=300_000, seed=4)
    generate_file(tmp_path / "p.dbn.zst", config, on_progress=lambda *p: seen.append(p))
    assert len(seen) > 1 and seen[-1] == (300_000, 300_000)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
