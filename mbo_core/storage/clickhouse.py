"""ClickHouse access for every stage: one URL, the same client code for chDB and a server.

`connect(settings)` opens clickhouse-connect on `chdb:///dir` (the embedded engine: dev, tests,
the one-command run) or `http(s)://host:port` (a server), creating the database if needed.
`apply_schema(client)` runs the versioned DDL of mbo_core/storage/ddl idempotently. `insert_columns`
inserts whole columns through Arrow (row lists are ~10x slower).

chDB allows ONE process per data directory and one directory per process: with a chdb URL, the
stages that touch ClickHouse must share one process.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import clickhouse_connect
import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from mbo_core.errors import MboError
from mbo_core.settings import Settings

MIGRATIONS_TABLE = "schema_migrations"
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

#: What insert_columns accepts per column: numpy (cast-checked to the column type) or Arrow
#: (passed as is); a plain sequence for nested types (Array, Map) when Arrow is not at hand.
ColumnData: TypeAlias = np.ndarray | pa.Array | pa.ChunkedArray | Sequence[Any]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        return split_statements(self.sql)


def split_statements(sql: str) -> list[str]:
    """Statements of a DDL file: each ends with `;` at the end of a line. Comment-only or blank
    chunks are dropped."""
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).rstrip().removesuffix(";"))
            current = []
    statements.append("\n".join(current))
    return [text.strip() for text in statements if _has_code(text)]


def _has_code(text: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in text.splitlines())


def migrations() -> list[Migration]:
    """The numbered DDL files of mbo_core/storage/ddl in version order."""
    found = []
    for entry in resources.files("mbo_core.storage.ddl").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise MboError(f"two DDL files share a version number in mbo_core/storage/ddl: {versions}")
    return found


def _open(settings: Settings, url: str) -> Client:
    parts = urlsplit(url)
    if parts.scheme == "chdb":
        return clickhouse_connect.get_client(dsn=url)
    ch = settings.clickhouse
    return clickhouse_connect.get_client(
        interface=parts.scheme,
        host=parts.hostname,
        port=parts.port or (8443 if parts.scheme == "https" else 8123),
        username=ch.username,
        password=ch.password.get_secret_value(),
        connect_timeout=ch.connect_timeout_s,
        send_receive_timeout=ch.query_timeout_s,
        verify=ch.verify_tls,
        ca_cert=str(ch.ca_cert) if ch.ca_cert else None,
        client_name="mbo-pipeline",
    )


def connect(settings: Settings, *, database: str | None = None) -> Client:
    """A client on MBO_CLICKHOUSE__URL (dev default: chDB in the data dir), its database created
    if missing. database overrides MBO_CLICKHOUSE__DATABASE (must be a plain identifier)."""
    url = settings.clickhouse_url
    name = database or settings.clickhouse.database
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise MboError(f"ClickHouse database {name!r} is not a plain identifier")
    shown = url if url.startswith("chdb:") else f"{url} as {settings.clickhouse.username}"
    try:
        client = _open(settings, url)
    except Exception as exc:  # clickhouse-connect raises several unrelated types here
        hint = ""
        if url.startswith("chdb:") and "Cannot lock file" in str(exc):
            hint = " (only one process may open a chDB directory: is another mbo stage using it?)"
        raise MboError(f"cannot open ClickHouse at {shown}: {_one_line(exc)}{hint}") from None
    try:
        exists = client.query(
            "SELECT count() FROM system.databases WHERE name = {name:String}",
            parameters={"name": name},
        ).result_rows[0][0]
        # Checked first so that a user without CREATE DATABASE can still use an existing one.
        if not exists:
            client.command(f"CREATE DATABASE IF NOT EXISTS `{name}`")
    except ClickHouseError as exc:
        client.close()
        raise MboError(
            f"cannot use ClickHouse database {name} at {shown}: {_one_line(exc)}"
        ) from None
    client.database = name
    return client


def _run(
    client: Client, statement: str, source: str, parameters: dict[str, Any] | None = None
) -> None:
    try:
        client.command(statement, parameters=parameters)
    except ClickHouseError as exc:
        raise MboError(f"ClickHouse migration {source} failed: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


def applied_migrations(client: Client) -> dict[int, tuple[str, str]]:
    """version -> (file name, checksum) of the migrations recorded in the client's database."""
    rows = client.query(
        f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE} FINAL ORDER BY version"
    ).result_rows
    return {int(version): (str(name), str(checksum)) for version, name, checksum in rows}


def apply_schema(client: Client, available: Sequence[Migration] | None = None) -> list[Migration]:
    """Run the migrations not yet recorded in the client's database, in order; record each.

    Idempotent: a second call applies nothing. Returns what it applied. Raises MboError if an
    applied migration's file has changed since (add a new migration instead) or a statement fails.
    """
    bootstrap = (
        resources.files("mbo_core.storage.ddl").joinpath(f"{MIGRATIONS_TABLE}.sql").read_text()
    )
    for statement in split_statements(bootstrap):
        _run(client, statement, f"{MIGRATIONS_TABLE}.sql")
    done = applied_migrations(client)
    applied: list[Migration] = []
    for migration in migrations() if available is None else available:
        recorded = done.get(migration.version)
        if recorded is not None:
            if recorded[1] != migration.checksum:
                raise MboError(
                    f"ClickHouse migration {migration.name} changed after it was applied to "
                    f"database {client.database}: add a new migration instead of editing it"
                )
            continue
        for statement in migration.statements():
            _run(client, statement, migration.name)
        # A one-row SQL insert: Arrow would import pandas, seconds for a process that only
        # applies the schema (`mbo infra up`). INSERT ... SELECT binds parameters on servers.
        _run(
            client,
            f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum, applied_at) "
            "SELECT {version:UInt32}, {name:String}, {checksum:String}, now64(3)",
            migration.name,
            parameters={
                "version": migration.version,
                "name": migration.name,
                "checksum": migration.checksum,
            },
        )
        applied.append(migration)
    return applied


_NUMPY_OF_CLICKHOUSE: Mapping[str, np.dtype[Any]] = {
    name: np.dtype(kind)
    for name, kind in (
        ("UInt8", "u1"),
        ("UInt16", "u2"),
        ("UInt32", "u4"),
        ("UInt64", "u8"),
        ("Int8", "i1"),
        ("Int16", "i2"),
        ("Int32", "i4"),
        ("Int64", "i8"),
        ("Float32", "f4"),
        ("Float64", "f8"),
        ("Bool", "?"),
    )
}
_TIME_UNITS = {0: "s", 3: "ms", 6: "us", 9: "ns"}
_DATETIME64 = re.compile(r"^DateTime64\((\d+)(?:,\s*'([^']+)')?\)$")


def column_types(client: Client, table: str) -> dict[str, str]:
    """name -> ClickHouse type of the table's insertable columns (ALIAS/MATERIALIZED excluded)."""
    rows = client.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} "
        "AND table = {table:String} AND default_kind NOT IN ('ALIAS', 'MATERIALIZED')",
        parameters={"db": client.database or "default", "table": table},
    ).result_rows
    if not rows:
        raise MboError(f"ClickHouse table {client.database}.{table} does not exist")
    return {str(name): str(kind) for name, kind in rows}


def _base_type(kind: str) -> str:
    for wrapper in ("Nullable(", "LowCardinality("):
        if kind.startswith(wrapper):
            return _base_type(kind[len(wrapper) : -1])
    return kind


def _checked_cast(name: str, values: np.ndarray, target: np.dtype[Any]) -> np.ndarray:
    if values.dtype == target:
        return values
    if values.dtype.kind in "iu" and target.kind in "iu":
        # Integer widths differ all over (Kafka offsets arrive as int64, the column is UInt64):
        # accept any integer column whose values fit, never wrap silently.
        info = np.iinfo(target)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise MboError(f"column {name}: values outside {info.min}..{info.max} ({target})")
        return values.astype(target)
    if np.can_cast(values.dtype, target, casting="same_kind"):
        return values.astype(target)
    raise MboError(f"column {name}: cannot store numpy {values.dtype} as {target}")


def _numpy_to_arrow(name: str, kind: str, values: np.ndarray) -> pa.Array:
    mask = np.ma.getmaskarray(values) if isinstance(values, np.ma.MaskedArray) else None
    data = values.data if isinstance(values, np.ma.MaskedArray) else values
    base = _base_type(kind)
    datetime64 = _DATETIME64.match(base)
    if datetime64:
        unit = _TIME_UNITS.get(int(datetime64.group(1)))
        if unit is None:
            raise MboError(f"column {name}: {kind} has no Arrow time unit")
        if data.dtype.kind == "M":
            ticks = data.astype(f"datetime64[{unit}]").view(np.int64)
        else:
            # Integers are ticks of the column's precision (ns for DBN's DateTime64(9)).
            ticks = _checked_cast(name, data, np.dtype(np.int64))
        return pa.array(ticks, type=pa.timestamp(unit, tz=datetime64.group(2)), mask=mask)
    if base.startswith("Enum8(") and data.dtype.kind in "iu":
        return pa.array(_checked_cast(name, data, np.dtype(np.int8)), mask=mask)
    if base.startswith("Enum16(") and data.dtype.kind in "iu":
        return pa.array(_checked_cast(name, data, np.dtype(np.int16)), mask=mask)
    target = _NUMPY_OF_CLICKHOUSE.get(base)
    if target is not None:
        return pa.array(_checked_cast(name, data, target), mask=mask)
    return pa.array(data, mask=mask)


def to_arrow_table(types: Mapping[str, str], columns: Mapping[str, ColumnData]) -> pa.Table:
    """An Arrow table of columns, numpy ones converted to the Arrow type of their column."""
    unknown = [name for name in columns if name not in types]
    if unknown:
        raise MboError(f"unknown columns {unknown}; the table has {sorted(types)}")
    arrays: list[pa.Array | pa.ChunkedArray] = []
    for name, values in columns.items():
        if isinstance(values, pa.Array | pa.ChunkedArray):
            arrays.append(values)
        elif isinstance(values, np.ndarray):
            arrays.append(_numpy_to_arrow(name, types[name], values))
        else:
            arrays.append(pa.array(values))
    lengths = {name: len(array) for name, array in zip(columns, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        raise MboError(f"columns differ in length: {lengths}")
    return pa.Table.from_arrays(arrays, names=list(columns))


def insert_columns(client: Client, table: str, columns: Mapping[str, ColumnData]) -> int:
    """Insert whole columns (one Arrow block) into table; returns the row count.

    Columns left out get their DEFAULT. numpy integers are range-checked into the column type,
    integer timestamps are ticks of the DateTime64 precision, Enum8 takes its integer codes.
    """
    arrow = to_arrow_table(column_types(client, table), columns)
    if arrow.num_rows == 0:
        return 0
    try:
        client.insert_arrow(table, arrow)
    except ClickHouseError as exc:
        raise MboError(f"insert into {table} failed: {_one_line(exc)}") from None
    return int(arrow.num_rows)
