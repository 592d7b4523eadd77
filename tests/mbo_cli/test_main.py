"""mbo_cli.main: every subcommand in the help, and a stage imports only its own command."""

from __future__ import annotations

import subprocess
import sys

from mbo_cli.main import COMMANDS
from tests.paths import REPO


def _mbo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=True, cwd=REPO
    )


def test_the_help_lists_every_subcommand() -> None:
    shown = _mbo("-m", "mbo_cli.main", "--help").stdout
    assert all(f" {name} " in shown for name in COMMANDS)


#: `mbo sink --help` as the entry point runs it, then the mbo_cli modules it had imported.
SINK_HELP = """
import atexit, runpy, sys
atexit.register(lambda: print(sorted(m for m in sys.modules if m.startswith("mbo_cli.")),
                              file=sys.stderr))
sys.argv = ["mbo", "sink", "--help"]
runpy.run_module("mbo_cli.main", run_name="__main__")
"""


def test_a_subcommand_imports_its_own_module_only() -> None:
    imported = _mbo("-c", SINK_HELP).stderr.splitlines()[-1]
    assert imported == "['mbo_cli.sink']"
