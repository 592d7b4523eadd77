"""`mbo`: one command with a subcommand per job. Each subcommand lives in its own module here.

Errors the user can fix (mbo_core.errors.MboError) print one line on stderr and exit with 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from mbo_core.errors import MboError

#: Subcommand -> (module, attribute): a typer command function, or a typer app for a group.
COMMANDS: dict[str, tuple[str, str]] = {
    "api": ("mbo_cli.api", "api"),
    "book": ("mbo_cli.book", "book"),
    "fetch": ("mbo_cli.fetch", "fetch"),
    "generate": ("mbo_cli.generate", "generate"),
    "produce": ("mbo_cli.produce", "produce"),
    "process": ("mbo_cli.process", "process"),
    "sink": ("mbo_cli.sink", "sink"),
    "run": ("mbo_cli.run", "run"),
    "sql": ("mbo_cli.sql", "sql"),
    "infra": ("mbo_cli.infra", "app"),
}


def build_app(only: str | None = None) -> typer.Typer:
    """The `mbo` command with every subcommand, or with `only` that one: a stage started by
    `mbo run` then imports its own module, not the others' (the Databento client, rich's
    progress bars, the file reader...: ~0.2 CPU-s of each stage's start-up)."""
    app = typer.Typer(
        name="mbo",
        help="Replay Databento MBO data, rebuild exact limit order books, stream and store them.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _subcommands() -> None:
        """Always a command group, so `mbo book FILE` parses the same whatever is registered."""

    for name, (module, attribute) in COMMANDS.items():
        if only is not None and name != only:
            continue
        command = getattr(importlib.import_module(module), attribute)
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=name)
        else:
            app.command(name)(command)
    return app


def __getattr__(name: str) -> Any:
    """`from mbo_cli.main import app`: the whole command (tests run it with typer's runner)."""
    if name == "app":
        return build_app()
    raise AttributeError(name)


def main() -> None:
    arguments = sys.argv[1:]
    only = arguments[0] if arguments and arguments[0] in COMMANDS else None
    try:
        build_app(only)()
    except MboError as exc:
        print(f"mbo: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("mbo: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
