"""`mbo sql QUERY`: run SQL against the configured ClickHouse (the embedded chDB by default).

Prints one JSON object per row. `--param name=value` binds ClickHouse's `{name:Type}`
placeholders (the server converts the text to Type, as `clickhouse-client --param_name=value`
does), so the parameterised queries of docs/storage.md run as written. Timestamps are exact:
DateTime64 columns come out as ISO-8601 with nine fraction digits and `Z` (UTC), DateTime ones
with `Z` (api.routers.sql formats the rows, for both paths below).

chDB lets one process open a data directory at a time. While another process holds it (`mbo
run`'s API, which runs the sink), the query goes to that process's API, `POST /v1/sql`: read-only
and bounded there (docs/api.md), the same rows printed the same way. The API is found where `mbo
run` wrote its port, `<data dir>/run/ports.json` (when the run's API is the process that holds
the directory), else at MBO_API__HOST:MBO_API__PORT; with MBO_API__TOKEN as the bearer token.
If none answers, that is one line. A data directory without ClickHouse data is an error, not a
new empty database.
"""

from __future__ import annotations

import fcntl
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from mbo_core.settings import Settings

_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: How long `mbo sql` waits for a running API's answer: its queries stop at 10 s.
API_TIMEOUT_S = 60.0


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
    """Run a SQL query on ClickHouse and print the rows as JSON lines (through the running
    API, read-only, while `mbo run` holds the embedded ClickHouse)."""
    from mbo_core.errors import InputError  # noqa: PLC0415
    from mbo_core.settings import load_settings  # noqa: PLC0415

    parameters: dict[str, str] = {}
    for item in param or []:
        name, equals, value = item.partition("=")
        if not equals or not _PARAM_NAME.fullmatch(name):
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
    holder = _holder(chdb) if chdb is not None else None
    if holder is None:
        sys.stdout.buffer.write(_locally(settings, query, parameters))
    else:
        sys.stdout.buffer.write(_through_api(settings, query, parameters, holder))


def _locally(settings: Settings, query: str, parameters: dict[str, str]) -> bytes:
    """The rows as JSON lines, from this process's own client."""
    from api.routers.sql import QueryError, run_query  # noqa: PLC0415
    from mbo_core.errors import MboError  # noqa: PLC0415
    from mbo_core.storage.clickhouse import connect  # noqa: PLC0415

    client = connect(settings)
    try:
        return run_query(client, query, parameters).json_lines()
    except QueryError as exc:
        raise MboError(f"query failed: {exc}") from None
    except Exception as exc:  # the server went away: its message is the useful part
        raise MboError(f"query failed: {' '.join(str(exc).split())[:500]}") from None
    finally:
        client.close()


def _holder(chdb: Path) -> int | None:
    """The pid of the process that has the chDB directory open (0 if its status file does not
    say), None if none has. ClickHouse holds an exclusive flock on `<dir>/status` while it runs
    (and writes `PID: n` in it); a shared probe, dropped at once, tells whether it is held."""
    try:
        handle = (chdb / "status").open("rb")
    except FileNotFoundError:
        return None  # removed at a clean shutdown
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            match = re.search(rb"PID: (\d+)", handle.read(200))
            return int(match.group(1)) if match else 0
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None  # left by a process that was killed


def _through_api(settings: Settings, query: str, parameters: dict[str, str], holder: int) -> bytes:
    """The rows as JSON lines, from the API of the process that holds the data directory. The
    API formats the values as the local path does (api.routers.sql) and they arrive as JSON
    strings, numbers, booleans, nulls, arrays and objects, which orjson writes back unchanged:
    the same lines (no API client library is loaded for this, nor FastAPI)."""
    import orjson  # noqa: PLC0415

    from mbo_core.errors import MboError  # noqa: PLC0415

    body = orjson.dumps({"query": query, "params": parameters})
    token = settings.api.token.get_secret_value() if settings.api.token else None
    tried: list[str] = []
    for base in _api_addresses(settings, holder):
        answer = _post(f"{base}/v1/sql", body, token)
        if answer is None:
            tried.append(base)
            continue
        status, payload = answer
        if status == 200 and isinstance(payload, dict):
            return b"".join(orjson.dumps(row) + b"\n" for row in _rows(payload))
        raise MboError(_refusal(base, status, payload))
    shown = f"process {holder}" if holder else "another process"
    raise MboError(
        f"{settings.chdb_dir} is open in {shown} (chDB allows one per data directory) and no mbo "
        f"API answers at {' or '.join(tried)}: query through the API of the pipeline that holds "
        "it (POST /v1/sql, docs/api.md), or after it ends"
    )


def rows_through_api(settings: Settings, base: str, query: str) -> list[dict[str, Any]] | None:
    """The rows of a query asked of the API at `base` (`POST /v1/sql`, read-only and bounded
    there), with their JSON values; None when nothing answers or the API refuses it."""
    import orjson  # noqa: PLC0415

    token = settings.api.token.get_secret_value() if settings.api.token else None
    answer = _post(f"{base}/v1/sql", orjson.dumps({"query": query, "params": {}}), token)
    if answer is None or answer[0] != 200 or not isinstance(answer[1], dict):
        return None
    return _rows(answer[1])


def _rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a `POST /v1/sql` answer as {column: value}."""
    names = [column["name"] for column in payload["columns"]]
    return [dict(zip(names, row, strict=True)) for row in payload["rows"]]


def api_address(host: str, port: int) -> str:
    """http://host:port of an API bound to `host` (a wildcard bind answers on loopback)."""
    host = host.strip().strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _api_addresses(settings: Settings, holder: int) -> list[str]:
    """Where the holder's API may listen: the port `mbo run` wrote (if the run's API is the
    holder, or the holder is unknown), then the configured one."""
    ports: list[int] = []
    run = settings.data_dir / "run"
    try:
        port = int(json.loads((run / "ports.json").read_text())["api"])
        children = json.loads((run / "processes.json").read_text()).get("children", {})
        if not holder or holder in children.values():
            ports.append(port)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no run wrote them (the holder is `mbo api --with-sink` or another program)
    if settings.api.port not in ports:
        ports.append(int(settings.api.port))
    return [api_address(settings.api.host, port) for port in ports]


def _post(url: str, body: bytes, token: str | None) -> tuple[int, Any] | None:
    """(status, decoded JSON body) of the API's answer; None if nothing answers there or it
    has no SQL route (404)."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    import orjson  # noqa: PLC0415

    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    # No proxy: the API is on this machine (an http_proxy would otherwise be asked for it).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=API_TIMEOUT_S) as response:
            status, data = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, data = exc.code, exc.read()
    except (OSError, ValueError):  # refused, unreachable, timed out, not HTTP
        return None
    if status == 404:
        return None
    try:
        return status, orjson.loads(data)
    except orjson.JSONDecodeError:
        return status, data.decode("utf-8", "replace")[:200]


def _refusal(base: str, status: int, payload: Any) -> str:
    """The API's refusal of the query as the one line `mbo sql` prints."""
    detail = payload.get("detail") if isinstance(payload, dict) else payload
    if status == 422 and isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        if list(first.get("loc", [])) == ["body", "query"]:
            return f"query failed: {first.get('msg')}"
        detail = f"{'.'.join(map(str, first.get('loc', [])))}: {first.get('msg')}"
    if status == 401:
        detail = "missing or wrong bearer token: set MBO_API__TOKEN to the pipeline's token"
    return f"the mbo API at {base} refused the query ({status}): {detail}"
