"""`mbo book` through the installed console script, as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import databento_dbn
import pytest
import zstandard

from tests.paths import CLX5, MBO


def mbo(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MBO, *map(str, args)], capture_output=True, text=True, timeout=300, check=False
    )


def test_book_writes_final_books_and_one_event_line_per_f_last(tmp_path: Path) -> None:
    final, events = tmp_path / "final.json", tmp_path / "events.jsonl"
    run = mbo("book", CLX5, "-o", final, "--events", events)
    assert run.returncode == 0, run.stderr
    result = json.loads(final.read_text())
    assert (result["records"], result["events"]) == (38_212, 32_053)
    (book,) = result["books"]
    assert book["symbol"] == "CLX5" and len(book["bids"]) == 10 and book["crossed"] is True
    lines = events.read_text().splitlines()
    assert len(lines) == 32_053
    last = json.loads(lines[-1])
    assert last == book  # after the last event, the book is the final book
    assert "32,053 events" in run.stderr
    assert set(tmp_path.iterdir()) == {final, events}  # no temporary files left behind


def test_book_to_stdout_with_all_levels() -> None:
    run = mbo("book", CLX5, "--depth", "0")
    assert run.returncode == 0, run.stderr
    (book,) = json.loads(run.stdout)["books"]
    assert (len(book["bids"]), len(book["asks"])) == (61, 52)


def test_book_reads_zstd(tmp_path: Path) -> None:
    path = tmp_path / "clx5.dbn.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(CLX5.read_bytes()))
    run = mbo("book", path, "-d", "3")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["events"] == 32_053


def truncated(tmp_path: Path) -> Path:
    path = tmp_path / "cut.dbn"
    path.write_bytes(CLX5.read_bytes()[:-30])
    return path


def not_dbn(tmp_path: Path) -> Path:
    path = tmp_path / "notes.dbn"
    path.write_text("hello")
    return path


def other_schema(tmp_path: Path) -> Path:
    path = tmp_path / "mbp.dbn"
    path.write_bytes(
        databento_dbn.Metadata(
            dataset="GLBX.MDP3",
            start=0,
            stype_in=databento_dbn.SType("raw_symbol"),
            stype_out=databento_dbn.SType("instrument_id"),
            schema=databento_dbn.Schema("trades"),
        ).encode()
    )
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.dbn", "no such file"),
        (not_dbn, "not a DBN file"),
        (truncated, "truncated"),
        (other_schema, "schema is trades, expected mbo"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_no_output(
    tmp_path: Path, make: object, message: str
) -> None:
    source = make(tmp_path)  # type: ignore[operator]
    out = tmp_path / "out"
    out.mkdir()
    run = mbo("book", source, "-o", out / "final.json", "--events", out / "events.jsonl")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and message in run.stderr
    assert "Traceback" not in run.stderr
    assert list(out.iterdir()) == []  # nothing half-written, not even temporary files


def test_negative_depth_is_refused() -> None:
    run = mbo("book", CLX5, "--depth", "-1")
    assert run.returncode == 2 and "--depth" in run.stderr
