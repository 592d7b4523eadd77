"""`mbo generate` through the installed console script, as a user runs it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import databento
import pytest

from generator import core
from mbo_cli import generate as cli
from mbo_core.errors import InputError
from tests.paths import MBO


def mbo(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MBO, *map(str, args)], capture_output=True, text=True, timeout=300, check=False, cwd=cwd
    )


def test_generate_writes_the_file_and_the_books_mbo_book_rebuilds(tmp_path: Path) -> None:
    run = mbo(
        "generate",
        "--instruments", "3",
        "--records", "50k",
        "--publishers", "2",
        "--seed", "7",
        "--start", "2024-03-01T13:00:00-05:00",
        "-o", "out.dbn.zst",
        "--expect", "expect.json",
        "--depth", "5",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "50,000 records" in run.stderr and "-> out.dbn.zst" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expect.json", "out.dbn.zst"]
    store = databento.DBNStore.from_file(tmp_path / "out.dbn.zst")
    assert store.metadata.start == 1_709_316_000_000_000_000  # 18:00 UTC
    assert store.symbols == ["XAAF5", "XAAG5", "XAAH5"]  # contracts of the next year
    expect = json.loads((tmp_path / "expect.json").read_text())
    assert expect["records"] == 50_000 and len(expect["books"]) == 3 * 2 + 3
    book = mbo("book", "out.dbn.zst", "--depth", "5", "-o", "final.json", cwd=tmp_path)
    assert book.returncode == 0, book.stderr
    assert json.loads((tmp_path / "final.json").read_text()) == expect


def test_plain_dbn_and_defaults(tmp_path: Path) -> None:
    cli.generate(output=tmp_path / "one.dbn", records="2000")
    store = databento.DBNStore.from_file(tmp_path / "one.dbn")
    assert store.symbols == ["XAAF6"] and len(store.to_ndarray()) == 2_000
    assert store.metadata.start == core.DEFAULT_START_NS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "-o/--output is required"),
        (["-o", "x.dbn", "--records", "2.5M"], "--records: expected a whole number"),
        (["-o", "x.dbn", "--start", "next monday"], "--start: not an ISO 8601"),
    ],
)
def test_bad_arguments_fail_with_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    run = mbo("generate", *args, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("mbo: error: ")
    assert message in run.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output": "x.json"}, "must end in .dbn or .dbn.zst"),
        ({"output": ".dbn"}, "must end in .dbn or .dbn.zst"),
        ({"instruments": "0"}, "--instruments must be between 1 and 1,000,"),
        ({"instruments": "many"}, "--instruments: expected a whole number"),
        ({"records": "0"}, "--records must be between 1 and 1,000,000,000,"),
        ({"records": "1_000_000_001"}, "--records must be between 1 and"),
        ({"publishers": "17"}, "--publishers must be between 1 and 16,"),
        ({"instruments": "1000", "publishers": "16"}, "--instruments x --publishers"),
        ({"seed": "-3"}, "--seed must be between 0 and"),
        ({"start": "1900-01-01"}, "--start must be between 1971 and 2200"),
        ({"start": "2025-13-01"}, "--start: not an ISO 8601"),
        ({"depth": "-1"}, "--depth must be between 0 and"),
        ({"output": "missing/x.dbn"}, "directory missing does not exist"),
        ({"expect": "x.dbn"}, "--expect must name a different file"),
        ({"expect": "."}, "is a directory"),
        ({"output": "/sys/x.dbn"}, "/sys"),  # sysfs refuses new files, even to root
    ],
)
def test_argument_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    arguments: dict[str, object] = {"output": Path("x.dbn"), "records": "10", **kwargs}
    for name in ("output", "expect"):
        if isinstance(arguments.get(name), str):
            arguments[name] = Path(str(arguments[name]))
    with pytest.raises(InputError, match=re.escape(message)):
        cli.generate(**arguments)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_cli_limits_match_the_generator() -> None:
    assert (cli.MAX_INSTRUMENTS, cli.MAX_PUBLISHERS, cli.MAX_BOOKS) == (
        core.MAX_INSTRUMENTS,
        core.MAX_PUBLISHERS,
        core.MAX_BOOKS,
    )
    assert cli.DEFAULT_START_NS == core.DEFAULT_START_NS
