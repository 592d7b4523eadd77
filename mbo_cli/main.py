"""`mbo`: one command with a subcommand per job. Each subcommand lives in its own module here.

Errors the user can fix (mbo_core.errors.MboError) print one line on stderr and exit with 2.
"""

from __future__ import annotations

import sys

import typer

from mbo_cli import api, book, fetch, generate, infra, process, produce, run, sink, sql
from mbo_core.errors import MboError

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


app.command("api")(api.api)
app.command("book")(book.book)
app.command("fetch")(fetch.fetch)
app.command("generate")(generate.generate)
app.command("produce")(produce.produce)
app.command("process")(process.process)
app.command("sink")(sink.sink)
app.command("run")(run.run)
app.command("sql")(sql.sql)
app.add_typer(infra.app, name="infra")


def main() -> None:
    try:
        app()
    except MboError as exc:
        print(f"mbo: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("mbo: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
