"""`POST /v1/sql`: read-only, bounded SQL on the API's ClickHouse, so that a running pipeline can
be queried (with the embedded chDB only the process that opened the data directory may read it:
`mbo run`'s API, and `mbo sql` sends its query here while a run holds the directory).

Read-only is ClickHouse's own rule, not a parse of the query: the route's queries run on a client
of their own (a second handle on the process's chDB engine, or a second HTTP client of a
ClickHouse server) whose settings are `readonly=1` and the limits below. The engine then refuses
INSERT, ALTER, DROP, CREATE, OPTIMIZE, SYSTEM, SET, a `SETTINGS` clause (no query can lift the
limits) and the table functions that reach files, URLs or programs (`file`, `url`, `s3`,
`executable`, ...), each with `Cannot execute query in readonly mode` or `Cannot modify ...`.
The settings are the client's, not each query's: for chDB, clickhouse-connect sends a query's
own settings as a `SETTINGS` clause appended to its text (which a query could defeat) or with SET
and a restore around INSERTs (which readonly=1 makes fail, leaving the session read-only); the
API's shared client, which the sink writes on, never sees them.

The same `run_query` and row formatting serve `mbo sql`'s local path, so both print the same rows:
DateTime64 values as ISO-8601 UTC with nine fraction digits and `Z`, DateTime ones with `Z`
(inside arrays, maps and tuples too), exact integers (beyond 64 bits as strings), bytes as text.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from api import models
from api.dependencies import require_token
from api.params import ParamError
from api.responses import errors
from api.store import BackendUnavailableError
from mbo_core.settings import Settings
from mbo_core.timestamps import NS_PER_S, iso_ns

log = logging.getLogger("api.sql")

#: The bounds of a query of this route (ClickHouse settings of its client; docs/api.md).
MAX_EXECUTION_S: Final = 10
MAX_RESULT_ROWS: Final = 100_000
MAX_RESULT_BYTES: Final = 256 * 1024 * 1024
MAX_MEMORY_BYTES: Final = 1024 * 1024 * 1024
MAX_QUERY_CHARS: Final = 100_000
#: The session of the route's client: limits first, readonly last (once it is set, ClickHouse
#: refuses to change any setting, these included).
READ_ONLY_SETTINGS: Final[Mapping[str, int | str]] = {
    "max_execution_time": MAX_EXECUTION_S,
    "max_result_rows": MAX_RESULT_ROWS,
    "max_result_bytes": MAX_RESULT_BYTES,
    "result_overflow_mode": "throw",
    "max_memory_usage": MAX_MEMORY_BYTES,
    "readonly": 1,
}
PARAM_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENGINE_MESSAGE = re.compile(r"Code: \d+\. DB::Exception: .*")
_VERSION = re.compile(r" \(version [^)]*\)")
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


class QueryError(Exception):
    """ClickHouse refused or could not run the query: the message says why, in one line."""


@dataclass(frozen=True)
class SqlResult:
    """Columns as (name, ClickHouse type) and rows as lists of JSON-ready values."""

    columns: list[tuple[str, str]]
    rows: list[list[Any]]

    def json_lines(self) -> bytes:
        """One JSON object per row, name: value (what `mbo sql` prints)."""
        names = [name for name, _type in self.columns]
        return b"".join(dumps(dict(zip(names, row, strict=True))) + b"\n" for row in self.rows)


def run_query(client: Any, query: str, parameters: Mapping[str, str] | None) -> SqlResult:
    """Run one query on a clickhouse-connect client; QueryError with ClickHouse's message if it
    is refused or fails, anything else (a backend that cannot be reached) as raised."""
    from clickhouse_connect.driver.exceptions import OperationalError  # noqa: PLC0415

    try:
        result = client.query(
            query,
            parameters=dict(parameters) if parameters else None,
            query_formats={"DateTime64": "int", "DateTime": "int"},
        )
        raw = result.result_rows
    except Exception as exc:
        # The engine's word on this query (an HTTP server's may come mid-stream, raised as an
        # OperationalError), or the driver's; a connection that failed is not the query's.
        said = _ENGINE_MESSAGE.search(" ".join(str(exc).split())) is not None
        if not said and isinstance(exc, (OperationalError, OSError)):
            raise
        raise QueryError(engine_message(exc)) from exc
    formats = [_formatter(column) for column in result.column_types]
    rows = [
        [value if f is None or value is None else f(value)
         for f, value in zip(formats, row, strict=True)]
        for row in raw
    ]  # fmt: skip
    names = list(result.column_names)
    return SqlResult([(n, c.name) for n, c in zip(names, result.column_types, strict=True)], rows)


def engine_message(exc: BaseException) -> str:
    """ClickHouse's one-line message in an error of clickhouse-connect (chDB or HTTP): from its
    `Code: N. DB::Exception:` on, without the version; else the error's text, in one line."""
    text = " ".join(str(exc).split())
    match = _ENGINE_MESSAGE.search(text)
    message = _VERSION.sub("", match.group(0)) if match else text or type(exc).__name__
    return message[:500]


def _formatter(column: Any) -> Callable[[Any], Any] | None:
    """How the values of a column of this clickhouse-connect type are written as JSON (None: as
    they are). DateTime64 and DateTime come as integers (query_formats): ISO-8601 UTC, exact."""
    base = column.base_type
    if base == "SimpleAggregateFunction":  # min(x) of such a column is typed as the column
        return _formatter(column.element_type)
    if base == "DateTime64":
        scale = 10 ** (9 - int(column.scale))
        return lambda ticks: iso_ns(int(ticks) * scale)
    if base == "DateTime":
        return lambda seconds: iso_ns(int(seconds) * NS_PER_S)[:19] + "Z"
    if base == "Array":
        inner = _formatter(column.element_type)
        if inner is None:
            return None
        return lambda items: [item if item is None else inner(item) for item in items]
    if base == "Map":
        key, value = _formatter(column.key_type), _formatter(column.value_type)
        if key is None and value is None:
            return None
        return lambda mapping: {
            k if key is None or k is None else key(k): v if value is None or v is None else value(v)
            for k, v in mapping.items()
        }
    if base == "Tuple":
        parts = [_formatter(element) for element in column.element_types]
        if all(part is None for part in parts):
            return None
        return lambda items: (
            items
            if not isinstance(items, (tuple, list))
            else [v if f is None or v is None else f(v) for f, v in zip(parts, items, strict=True)]
        )
    return None


def dumps(value: Any) -> bytes:
    """JSON of rows: map keys of any type as strings, bytes as (escaped) UTF-8 text, Decimals
    as fixed-point text, other non-JSON values (IP addresses, ...) as their text, integers
    beyond 64 bits as strings (JSON parsers lose them), NaN and infinities as null."""
    option = orjson.OPT_NON_STR_KEYS
    try:
        return orjson.dumps(value, default=_text, option=option)
    except orjson.JSONEncodeError:  # an integer out of orjson's 64-bit range
        return orjson.dumps(_small_ints(value), default=_text, option=option)


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, Decimal):
        return format(value, "f")  # the column's scale, never an exponent (str gives -1E-9)
    return str(value)


def _small_ints(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _INT64_MIN <= value <= _UINT64_MAX else str(value)
    if isinstance(value, dict):
        return {_small_ints(k): _small_ints(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_small_ints(item) for item in value]
    return value


class SqlClient:
    """The route's read-only client, opened on first use (connect, then READ_ONLY_SETTINGS on
    its session) and again after a connection failure; one query at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: Any = None
        self.lock = threading.Lock()

    def _client(self) -> Any:
        if self.client is None:
            from mbo_core.storage.clickhouse import connect  # noqa: PLC0415 (chDB loads slowly)

            client = connect(self.settings)
            try:
                for name, value in READ_ONLY_SETTINGS.items():
                    client.set_client_setting(name, value)
                # Checked, not assumed: a driver that dropped the setting would leave writes on.
                if str(client.command("SELECT getSetting('readonly')")) != "1":
                    raise RuntimeError("the SQL client's session did not become read-only")
            except BaseException:
                client.close()
                raise
            self.client = client
        return self.client

    def _run(self, query: str, parameters: Mapping[str, str]) -> SqlResult:
        from clickhouse_connect.driver.exceptions import OperationalError  # noqa: PLC0415

        with self.lock:
            try:
                return run_query(self._client(), query, parameters)
            except QueryError:
                raise
            except Exception as exc:  # cannot reach ClickHouse (or open it): 503
                message = " ".join(str(exc).split())[:300]
                log.warning("ClickHouse SQL query failed: %s", message)
                if isinstance(exc, (OperationalError, OSError)):
                    self._drop()
                raise BackendUnavailableError("clickhouse", message) from None

    async def run(self, query: str, parameters: Mapping[str, str]) -> SqlResult:
        return await asyncio.to_thread(self._run, query, parameters)

    def close(self) -> None:
        """Close the client (after the query that runs, if any)."""
        with self.lock:
            self._drop()

    def _drop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # closing a broken client must not hide the first error
                log.debug("closing the SQL client: %s", exc)


def _sql_client(app: Any) -> SqlClient:
    client: SqlClient | None = getattr(app.state, "sql_client", None)
    if client is None:
        client = app.state.sql_client = SqlClient(app.state.settings)
    return client


@asynccontextmanager
async def _close_at_shutdown(app: FastAPI) -> AsyncIterator[None]:
    yield
    client: SqlClient | None = getattr(app.state, "sql_client", None)
    if client is not None:
        await asyncio.to_thread(client.close)


router = APIRouter(
    prefix="/v1",
    dependencies=[Depends(require_token)],
    responses=errors(400, 401, 403, 422, 503),
    lifespan=_close_at_shutdown,
)


ParamValue = StrictStr | StrictInt | StrictFloat | StrictBool


class SqlRequest(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The SQL.")
    params: dict[str, ParamValue] = Field(
        default_factory=dict,
        max_length=100,
        description="Values of the query's `{name:Type}` placeholders (ClickHouse converts "
        "the text to Type, as `mbo sql --param name=value` and clickhouse-client do).",
    )


def parameter_text(value: str | int | float | bool) -> str:
    """A parameter's value as the text ClickHouse converts to the placeholder's type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


@router.post(
    "/sql", summary="Run a read-only SQL query on ClickHouse", response_model=models.SqlResult
)
async def sql(request: Request, body: Annotated[SqlRequest, Body()]) -> Response:
    """Runs `query` read-only (ClickHouse's `readonly=1`: no writes, DDL, SET or file and URL
    table functions) within at most 10 s, 100,000 result rows, 256 MiB of result and 1 GiB of
    memory. Answers `{"columns": [{"name", "type"}], "rows": [[value, ...]]}`: DateTime64 as
    ISO-8601 UTC with nine fraction digits, DateTime with `Z`. A query ClickHouse refuses or
    cannot run (syntax, readonly, a limit) is a 422 with its one-line message."""
    parameters: dict[str, str] = {}
    for name, value in body.params.items():
        if not PARAM_NAME.fullmatch(name):
            raise ParamError("params", f"{name!r} is not a parameter name", "body")
        parameters[name] = parameter_text(value)
    try:
        result = await _sql_client(request.app).run(body.query, parameters)
    except QueryError as exc:
        raise ParamError("query", str(exc), "body") from None
    columns = [{"name": name, "type": kind} for name, kind in result.columns]
    return Response(dumps({"columns": columns, "rows": result.rows}), media_type="application/json")
