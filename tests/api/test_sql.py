"""`POST /v1/sql` on a real ClickHouse (the session's chDB, or a server): the rows and their
formats, read-only as ClickHouse enforces it (and the sink's shared client left writable), the
limits, one-line refusals, and the security model of a state-changing route."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.routers.sql import MAX_RESULT_ROWS, READ_ONLY_SETTINGS
from mbo_core.settings import Settings
from mbo_core.storage.clickhouse import connect
from tests.api.pipeline import run_async
from tests.conftest import ClickHouseBackend, make_settings

pytestmark = pytest.mark.integration

TS = 1_758_742_200_000_860_311  # 2025-09-24T19:30:00.000860311Z
TABLE = """CREATE TABLE t (
    id UInt32, ts DateTime64(9, 'UTC'), second DateTime('UTC'), price Decimal(18, 9),
    name String, maybe Nullable(DateTime64(3, 'UTC')), times Array(DateTime64(9, 'UTC')),
    tags Map(UInt8, String), big UInt256
) ENGINE = MergeTree ORDER BY id"""
ROWS = """INSERT INTO t VALUES
    (1, fromUnixTimestamp64Nano(1758742200000860311, 'UTC'), 1758742200, 64.815, 'a', NULL,
     [fromUnixTimestamp64Nano(1758742200000860311, 'UTC')], {1: 'x'},
     toUInt256('1267650600228229401496703205376')),
    (2, fromUnixTimestamp64Nano(1758742201000000001, 'UTC'), 1758742201, -0.000000001, 'b',
     fromUnixTimestamp64Milli(1758742201500, 'UTC'), [], {}, 7)"""


@pytest.fixture
def settings(clickhouse_backend: ClickHouseBackend, tmp_path: Path) -> Iterator[Settings]:
    """Settings on the session's ClickHouse with a database of this test's, holding table t."""
    settings = _settings(clickhouse_backend, tmp_path)
    client = connect(settings)
    try:
        client.command(TABLE)
        client.command(ROWS)
        yield settings
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse.database}` SYNC")
        client.close()


def _settings(backend: ClickHouseBackend, tmp_path: Path, **api: Any) -> Settings:
    return make_settings(
        data_dir=tmp_path / "data",
        clickhouse={"url": backend.url, "username": backend.username,
                    "password": backend.password, "database": f"test_{uuid.uuid4().hex[:12]}"},
        api=api,
    )  # fmt: skip


@asynccontextmanager
async def _http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (which closes the route's client at the end)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield http


def _post_all(app: FastAPI, *bodies: dict[str, Any], **kwargs: Any) -> list[httpx.Response]:
    async def calls() -> list[httpx.Response]:
        async with _http(app) as http:
            return [await http.post("/v1/sql", json=body, **kwargs) for body in bodies]

    result: list[httpx.Response] = run_async(calls())
    return result


def _refusal(response: httpx.Response) -> str:
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "query"]
    message: str = detail["msg"]
    assert "\n" not in message and "(version" not in message
    return message


def test_rows_come_with_their_columns_and_exact_times(settings: Settings) -> None:
    app = create_app(settings, consume=False)
    query = "SELECT * FROM t WHERE id >= {first:UInt32} ORDER BY id"
    (answer,) = _post_all(app, {"query": query, "params": {"first": 1}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    names = ["id", "ts", "second", "price", "name", "maybe", "times", "tags", "big"]
    assert [column["name"] for column in body["columns"]] == names
    # (chDB's Native output drops the zone of DateTime('UTC'), a server's keeps it.)
    assert [column["type"] for column in body["columns"]][:3] == [
        "UInt32", "DateTime64(9, 'UTC')", body["columns"][2]["type"]
    ]  # fmt: skip
    assert body["columns"][2]["type"].startswith("DateTime")
    assert body["rows"] == [
        [1, "2025-09-24T19:30:00.000860311Z", "2025-09-24T19:30:00Z", "64.815000000", "a", None,
         ["2025-09-24T19:30:00.000860311Z"], {"1": "x"}, str(2**100)],
        [2, "2025-09-24T19:30:01.000000001Z", "2025-09-24T19:30:01Z", "-0.000000001", "b",
         "2025-09-24T19:30:01.500000000Z", [], {}, 7],
    ]  # fmt: skip
    # Text parameters as `mbo sql --param` gives them, and booleans.
    (typed,) = _post_all(
        app, {"query": "SELECT {s:String} AS s, {b:Bool} AS b", "params": {"s": "x'y", "b": True}}
    )
    assert typed.json()["rows"] == [["x'y", True]]


def test_writes_ddl_settings_and_file_or_url_functions_are_refused_by_clickhouse(
    settings: Settings,
) -> None:
    # The shared client (the sink writes on it) is the store's: it must stay writable.
    shared = connect(settings)
    app = create_app(settings, clickhouse=shared, consume=False)
    refused = [
        "INSERT INTO t (id) VALUES (3)",
        "INSERT INTO t (id) SELECT 4",
        "ALTER TABLE t DELETE WHERE id = 1",
        "DROP TABLE t",
        "TRUNCATE TABLE t",
        "CREATE TABLE u (x UInt8) ENGINE = Memory",
        "OPTIMIZE TABLE t FINAL",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')",
    ]
    lifted = ["SET readonly = 0", "SELECT 1 SETTINGS readonly = 0",
              "SELECT 1 SETTINGS max_result_rows = 0"]  # fmt: skip
    two = "SELECT count() FROM t; DROP TABLE t"
    *answers, both = _post_all(app, *({"query": q} for q in [*refused, *lifted, two]))
    # chDB runs each statement read-only; a server takes one statement a query.
    assert re.search("Cannot execute query in readonly mode|Multi-statements", _refusal(both))
    for query, answer in zip(refused, answers[: len(refused)], strict=True):
        assert "Cannot execute query in readonly mode" in _refusal(answer), query
    for query, answer in zip(lifted, answers[len(refused) :], strict=True):
        assert "Cannot modify" in _refusal(answer), query
    try:
        assert shared.query("SELECT count() FROM t").result_rows == [(2,)]
        shared.command("INSERT INTO t (id) VALUES (9)")
        assert shared.query("SELECT getSetting('readonly')").result_rows == [(0,)]
    finally:
        shared.close()


def test_limits_hold_and_refusals_are_clickhouse_s_one_line(settings: Settings) -> None:
    app = create_app(settings, consume=False)
    names = ", ".join(f"getSetting('{name}') AS {name}" for name in READ_ONLY_SETTINGS)
    limits, too_many, syntax, unbound, bad_name = _post_all(
        app,
        {"query": f"SELECT {names}"},
        {"query": f"SELECT number FROM numbers({MAX_RESULT_ROWS + 1})"},
        {"query": "SELEC 1"},
        {"query": "SELECT {x:UInt8}"},
        {"query": "SELECT 1", "params": {"no-name": 1}},
    )
    assert limits.status_code == 200
    (values,) = limits.json()["rows"]
    assert dict(zip(READ_ONLY_SETTINGS, values, strict=True)) == READ_ONLY_SETTINGS
    assert "Limit for result exceeded" in _refusal(too_many)
    assert _refusal(syntax).startswith("Code: 62. DB::Exception: Syntax error")
    assert "UNKNOWN_QUERY_PARAMETER" in _refusal(unbound)
    assert bad_name.status_code == 422
    assert bad_name.json()["detail"][0]["loc"] == ["body", "params"]


def test_the_route_is_guarded_as_a_state_changing_one(
    clickhouse_backend: ClickHouseBackend, tmp_path: Path
) -> None:
    query = {"query": "SELECT 1 AS one"}
    open_lan = create_app(_settings(clickhouse_backend, tmp_path, host="0.0.0.0"), consume=False)
    (no_token,) = _post_all(open_lan, query)
    assert no_token.status_code == 403 and "MBO_API__TOKEN" in no_token.json()["detail"]
    with_token = create_app(
        _settings(clickhouse_backend, tmp_path, host="0.0.0.0", token="s3cret"), consume=False
    )
    (missing,) = _post_all(with_token, query)
    (right,) = _post_all(with_token, query, headers={"Authorization": "Bearer s3cret"})
    assert missing.status_code == 401
    assert right.status_code == 200 and right.json()["rows"] == [[1]]
    loopback = create_app(_settings(clickhouse_backend, tmp_path), consume=False)
    (foreign,) = _post_all(loopback, query, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403


def test_clickhouse_down_is_a_503(tmp_path: Path) -> None:
    settings = make_settings(
        data_dir=tmp_path, clickhouse={"url": "http://127.0.0.1:9", "connect_timeout_s": 1}
    )
    (answer,) = _post_all(create_app(settings, consume=False), {"query": "SELECT 1"})
    assert answer.status_code == 503 and answer.json()["backend"] == "clickhouse"
