"""The web page in a real headless Chromium, against the real pipeline during a replay.

`mbo run` replays a generated three-instrument file (local broker, processor, chDB, API serving
the UI); `ui/tests/browser.mjs` (playwright-core driving Debian's /usr/bin/chromium, no browser
download) opens the page, waits for the ladder, sees the best bid/ask change, switches instrument
with the picker, checks the ladder shows the new one with every price padded to the tick, switches
the ladder to every-tick mode (empty rows for the book's gaps), checks the depth chart (drawn,
linear price axis, tick-padded labels), the quality badge's list, the history panel, that charts
and inputs fill their space, that an error shows whole and can be dismissed, then drives the
replay controls (start the same file through the API at a rate, pause, resume, stop). Screenshots
(`screenshot.png`, `ladder-every-tick.png`, `depth-chart.png`, ...) go to this test's tmp_path
(their paths are printed; `pytest -s` shows them).

Needs: Node.js, `npm ci` in ui/ (playwright-core, lightweight-charts), `npm run build` (ui/dist;
without it the gateway serves ui/ and the page loads the charts from ui/node_modules), and
Chromium (`apt-get install chromium`, or CHROMIUM_PATH). Missing any of them fails the test with
the command to run: this is the check of the page, so it is never skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from mbo_core.kafka.probes import free_port
from tests.paths import MBO, REPO

pytestmark = pytest.mark.integration

UI = REPO / "ui"
SCRIPT = UI / "tests" / "browser.mjs"
ADDRESS = re.compile(r"UI and API at (http://\S+/)")
START_TIMEOUT_S = 180.0
BROWSER_TIMEOUT_S = 240.0


def _prerequisites() -> tuple[str, str]:
    node = shutil.which("node")
    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    problems = []
    if node is None:
        problems.append("Node.js is not installed (node 18+)")
    if not (UI / "node_modules" / "playwright-core").is_dir():
        problems.append("ui/node_modules is missing: run `cd ui && npm ci && npm run build`")
    if not Path(chromium).exists():
        problems.append(f"no Chromium at {chromium}: `apt-get install -y chromium` (Debian)")
    if problems:
        pytest.fail("the browser test cannot run: " + "; ".join(problems))
    assert node is not None
    return node, chromium


@pytest.fixture(scope="module")
def generated_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Plain .dbn: the API knows its record count, so the replay shows a real progress fraction.
    path = tmp_path_factory.mktemp("ui-data") / "three.dbn"
    subprocess.run(
        [MBO, "generate", "--instruments", "3", "--records", "200000", "--seed", "6",
         "-o", str(path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def second_file(generated_file: Path) -> tuple[Path, Path]:
    """Another file of the same three instruments (other prices and orders), beside the first
    (the replay directory), and its final books as `mbo book` gives them."""
    path = generated_file.parent / "second.dbn"
    subprocess.run(
        [MBO, "generate", "--instruments", "3", "--records", "30000", "--seed", "9",
         "-o", str(path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    books = generated_file.parent.parent / "second-books.json"
    with books.open("w") as out:
        subprocess.run([MBO, "book", str(path)], check=True, stdout=out, timeout=300)
    return path, books


def _wait_for_address(run: subprocess.Popen[str], stderr: IO[str], log: Path) -> str:
    """The UI address `mbo run` prints on stderr once every stage is up."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with log.open("a") as copy:
        while time.monotonic() < deadline:
            line = stderr.readline()
            if not line:
                if run.poll() is not None:
                    raise AssertionError(f"mbo run ended early ({run.returncode}); see {log}")
                time.sleep(0.1)
                continue
            copy.write(line)
            copy.flush()
            match = ADDRESS.search(line)
            if match:
                return match.group(1)
    raise AssertionError(f"mbo run printed no UI address within {START_TIMEOUT_S:.0f} s; see {log}")


@contextlib.contextmanager
def _pipeline(source: Path, tmp_path: Path) -> Iterator[str]:
    """`mbo run` replaying `source` (slowly: it must still run while the browser looks, and end
    before the browser's own replay through the API, which is refused until then); yields the
    UI address; stops every stage with SIGINT afterwards."""
    log = tmp_path / "mbo-run.log"
    env = {**os.environ, "MBO_API__PORT": str(free_port())}
    run = subprocess.Popen(
        [MBO, "run", "--replay", str(source), "--rate", "5000",
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert run.stderr is not None
    try:
        yield _wait_for_address(run, run.stderr, log)
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
        try:
            rest, _ = run.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            run.kill()
            rest, _ = run.communicate()
        with log.open("a") as copy:
            copy.write(rest or "")


def test_page_follows_a_replay_and_switches_instrument(
    generated_file: Path, second_file: tuple[Path, Path], tmp_path: Path
) -> None:
    node, chromium = _prerequisites()
    out = tmp_path / "browser"
    with _pipeline(generated_file, tmp_path) as url:
        check = subprocess.run(
            [node, str(SCRIPT), "--url", url, "--out", str(out), "--chromium", chromium,
             "--timeout", "90", "--min-instruments", "3",
             "--replay-file", generated_file.name, "--second-file", second_file[0].name,
             "--second-books", str(second_file[1])],
            capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, cwd=UI, check=False,
        )  # fmt: skip
    lines = check.stdout.strip().splitlines()
    assert lines, f"no summary from the browser script:\n{check.stderr[-4000:]}"
    summary: dict[str, Any] = json.loads(lines[-1])
    assert check.returncode == 0, f"{summary.get('error')}\n{check.stderr[-4000:]}"

    assert summary["charts"] == "ready"
    assert summary["checks"][-1] == "checkSecondReplayStartsClean"  # every check ran
    assert summary["first_rows"]["asks"] > 0 and summary["first_rows"]["bids"] > 0
    assert summary["best_after"] != summary["best_before"]  # the ladder followed the replay
    assert len(summary["instruments"]) == 3
    assert summary["second_instrument"] != summary["first_instrument"]
    assert summary["second_symbol"] and summary["second_symbol"] != summary["first_symbol"]
    # Prices padded to the tick the page learned; the every-tick ladder shows the book's gaps.
    padding = summary["tick_padding"]
    assert int(padding["tick_units"]) > 0 and padding["row_decimals"] == [padding["decimals"]]
    every_tick = summary["every_tick"]
    assert every_tick["gap_seen_at"] is not None and every_tick["empty_rows"] > 0
    assert every_tick["row_decimals"] == [every_tick["decimals"]]
    depth = summary["depth"]
    assert depth["pixels"]["bid"] > 500 and depth["pixels"]["ask"] > 500
    assert depth["max_axis_error_px"] < 0.6  # x is linear in price
    assert len(summary["quality"]) >= 8
    assert summary["error_banner"]["visible"] and not summary["error_banner"]["clipped"]
    assert summary["replay_states"] == ["running", "paused", "running", "stopped"]
    assert 0 < float(summary["replay_progress"]) < 1
    # A second replay from the page, on top of the first's books: exactly its own book.
    second = summary["second_replay"]
    assert second["exact"] and second["levels_of_the_first_run_left"] == 0
    assert second["levels"] > 10
    assert summary["page_errors"] == []
    screenshot = Path(summary["screenshot"])
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    assert screenshot.parent == out
    names = {Path(path).name for path in summary["screenshots"]}
    assert {"ladder-every-tick.png", "depth-chart.png", "replay.png"} <= names
    for path in summary["screenshots"]:
        assert Path(path).is_file() and Path(path).stat().st_size > 5_000, path
        print(f"screenshot: {path}")
