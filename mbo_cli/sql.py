"""`mbo sql QUERY`: run SQL against the configured ClickHouse (the embedded chDB by default).

Prints one JSON object per row. `--param name=value` binds ClickHouse's `{name:Type}`
placeholders (the server converts the text to Type, as `clickhouse-client --param_name=value`
does), so the parameterised queries of docs/storage.md run as written. Timestamps are exact:
DateTime64 columns come out as ISO-8601 with nine fraction digits and `Z` (UTC), DateTime ones
with `Z`.

chDB lets one process open a data directory at a time: while `mbo run` (its API process) holds
it, this says so in one line; and a data directory without ClickHouse data is an error, not a new
empty database.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

_DATETIME64 = re.compile(r"(?:Nullable\()?DateTime64\((\d)")


def sql(
    query: Annotated[str, typer.Argument(help="The SQL to run, e.g. 'SELECT count() FROM bbo'.")],
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Local state (default MBO_DATA_DIR).")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="NAME=VALUE for a {NAME:Type} placeholder of the query (repeat for several).",
        ),
    ] = None,
) -> None:
    """Run a SQL query on ClickHouse and print the rows as JSON lines."""
    import orjson  # noqa: PLC0415

    from mbo_core.errors import InputError, MboError  # noqa: PLC0415
    from mbo_core.settings import load_settings  # noqa: PLC0415
    from mbo_core.storage.clickhouse import connect  # noqa: PLC0415

    parameters: dict[str, str] = {}
    for item in param or []:
        name, equals, value = item.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise InputError(f"--param {item!r}: expected NAME=VALUE")
        parameters[name] = value
    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
    settings = load_settings(**overrides)
    chdb = settings.chdb_dir
    if chdb is not None and not chdb.is_dir():
        raise InputError(
            f"no ClickHouse data at {chdb}: nothing was stored in {settings.data_dir} "
            "(another --data-dir or MBO_DATA_DIR?)"
        )
    client = connect(settings)
    try:
        result = client.query(
            query, parameters=parameters or None, query_formats={"DateTime64": "int"}
        )
    except Exception as exc:  # the server's message is the useful part
        raise MboError(f"query failed: {str(exc).strip().splitlines()[0]}") from exc
    finally:
        client.close()
    names = result.column_names
    formats = [_formatter(column.name) for column in result.column_types]
    out = sys.stdout.buffer
    for row in result.result_rows:
        values = {n: f(v) if f is not None and v is not None else v
                  for n, f, v in zip(names, formats, row, strict=True)}  # fmt: skip
        out.write(orjson.dumps(values, default=str))
        out.write(b"\n")


def _formatter(type_name: str) -> Any:
    """How a column's values are printed: DateTime64 ticks and DateTime as ISO-8601 UTC."""
    match = _DATETIME64.match(type_name)
    if match:
        scale = 10 ** (9 - int(match.group(1)))
        return lambda ticks: iso_ns(int(ticks) * scale)
    if type_name.startswith(("DateTime", "Nullable(DateTime")):
        return _iso_seconds
    return None


def iso_ns(ns: int) -> str:
    """Nanoseconds since the epoch as ISO-8601 UTC with nine fraction digits: exact."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"


def _iso_seconds(value: datetime) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value.timestamp()))
