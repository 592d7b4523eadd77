"""`mbo sql QUERY`: run SQL against the configured ClickHouse (the embedded chDB by default).

Prints one JSON object per row. chDB lets one process open a data directory at a time, so run it
while nothing else (e.g. `mbo run`) holds that directory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer


def sql(
    query: Annotated[str, typer.Argument(help="The SQL to run, e.g. 'SELECT count() FROM bbo'.")],
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Local state (default MBO_DATA_DIR).")
    ] = None,
) -> None:
    """Run a SQL query on ClickHouse and print the rows as JSON lines."""
    import orjson  # noqa: PLC0415

    from mbo_core.errors import MboError  # noqa: PLC0415
    from mbo_core.settings import load_settings  # noqa: PLC0415
    from mbo_core.storage.clickhouse import connect  # noqa: PLC0415

    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
    client = connect(load_settings(**overrides))
    try:
        result = client.query(query)
    except Exception as exc:  # the server's message is the useful part
        raise MboError(f"query failed: {str(exc).strip().splitlines()[0]}") from exc
    finally:
        client.close()
    names = result.column_names
    out = sys.stdout.buffer
    for row in result.result_rows:
        out.write(orjson.dumps(dict(zip(names, row, strict=True)), default=str))
        out.write(b"\n")
