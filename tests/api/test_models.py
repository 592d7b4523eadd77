"""The API's published schemas, without a pipeline: every route's OpenAPI answers (typed 200s,
the real error statuses), docs/asyncapi.yaml made from the models the server uses, and the
answers and live messages of an app fed synthetic bbo and snapshot messages validating against
both. tests/api/test_app.py checks the same on a real pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from api.app import create_app
from api.models import (
    WS_CLOSE_CODES,
    WS_NOT_NUMBERS,
    WS_OUT_OF_RANGE,
    Bbo,
    Book,
    Instrument,
    LiveSnapshot,
    asyncapi_yaml,
)
from tests.api.pipeline import serve
from tests.api.schemas import asyncapi_document, check_units, validate_live, validate_openapi
from tests.conftest import make_settings
from tests.paths import REPO
from tests.sink.wire import CLX5_INSTRUMENT, Sent, bbo_message, clx5_records, snapshot_message

JSON = "application/json"
BOOK = "/v1/instruments/{instrument_id}/book"
BBO = "/v1/instruments/{instrument_id}/bbo"
#: Every operation and the statuses it can answer (the 2xx first), as the code has them: 400 an
#: unknown Host (every route), 401 the token (/v1), 403 writes (Origin, off loopback, replay
#: control off or a file outside its directory), 404 unknown books, 409 another replay, 422
#: parameters, 503 ClickHouse down (history) or anything down (/readyz).
STATUSES = {
    ("/v1/instruments", "get"): {200, 400, 401},
    (BOOK, "get"): {200, 400, 401, 404, 422},
    (BBO, "get"): {200, 400, 401, 404, 422},
    ("/v1/instruments/{instrument_id}/runs", "get"): {200, 400, 401, 404, 422, 503},
    ("/v1/symbology", "get"): {200, 400, 401, 503},
    ("/v1/symbols/{symbol}", "get"): {200, 400, 401, 404, 422, 503},
    ("/v1/symbols/{symbol}/{route}", "get"): {307, 400, 401, 404, 422, 503},
    ("/v1/instruments/{instrument_id}/book/at", "get"): {200, 400, 401, 404, 422, 503},
    ("/v1/instruments/{instrument_id}/bbo/history", "get"): {200, 400, 401, 404, 422, 503},
    ("/v1/instruments/{instrument_id}/events", "get"): {200, 400, 401, 404, 422},
    ("/v1/replay", "get"): {200, 400, 401},
    ("/v1/replay", "post"): {200, 202, 400, 401, 403, 409, 422},
    ("/v1/replay/files", "get"): {200, 400, 401},
    ("/v1/replay/pause", "post"): {200, 400, 401, 403},
    ("/v1/replay/resume", "post"): {200, 400, 401, 403},
    ("/v1/replay/stop", "post"): {200, 400, 401, 403},
    ("/healthz", "get"): {200, 400},
    ("/readyz", "get"): {200, 400, 503},
    ("/metrics", "get"): {200, 400},
    ("/v1/sql", "post"): {200, 400, 401, 403, 422, 503},
}


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    """An app without Kafka, its live state fed a snapshot and a BBO change of CLX5."""
    app = create_app(make_settings(data_dir=tmp_path), consume=False)
    records = clx5_records()
    sent = Sent(partition=0, offset=3, records=records)
    state = app.state.live
    for encoded in (snapshot_message(sent, [10]), bbo_message(sent, [10])):
        state.apply(encoded.value, encoded.headers)
    return app


def test_every_operation_documents_a_typed_answer_and_its_real_statuses(app: FastAPI) -> None:
    spec = app.openapi()
    documented = {(path, method): op for path, method, op in _operations(spec)}
    missing = {route for route in STATUSES if route not in documented}
    assert not missing
    for (path, method), operation in documented.items():
        responses = operation["responses"]
        success = [int(s) for s in responses if s.startswith("2")]
        redirect = set(responses) == {"307", *(s for s in responses if s[0] in "45")}
        assert success or redirect, (path, method)  # a redirect (by symbol) has no body
        for status in success:
            (content,) = responses[str(status)]["content"].values()
            assert content["schema"], f"{method} {path} {status}: the body is undocumented"
        if (path, method) in STATUSES:
            assert {int(s) for s in responses} == STATUSES[path, method], (path, method)
        for status, answer in responses.items():
            if status[0] in "23" or (path == "/readyz" and status == "503"):
                continue
            ref = answer["content"][JSON]["schema"]["$ref"]
            body = "ValidationErrorBody" if status == "422" else "ErrorBody"
            assert ref == f"#/components/schemas/{body}", (path, method, status)
    ready = documented["/readyz", "get"]["responses"]["503"]["content"][JSON]["schema"]
    assert ready["$ref"] == "#/components/schemas/NotReady"


def test_the_asyncapi_document_is_generated_from_the_models() -> None:
    committed = (REPO / "docs" / "asyncapi.yaml").read_text()
    assert committed == asyncapi_yaml(), "regenerate: python -m api.models > docs/asyncapi.yaml"
    document = asyncapi_document()
    assert document["asyncapi"].startswith("3.")
    errors = document["components"]["messages"]["error"]
    assert errors["x-close-codes"] == {code: f"after an error of status {status}"
                                       for status, code in WS_CLOSE_CODES.items()}  # fmt: skip
    description = document["info"]["description"]
    for code in WS_CLOSE_CODES.values():
        assert f"| {code} |" in description
    assert WS_NOT_NUMBERS in description and WS_OUT_OF_RANGE in description
    for name, message in document["components"]["messages"].items():
        assert message["examples"], name
        for example in message["examples"]:
            validate_live(example["payload"])
            check_units(example["payload"])
    schemas = document["components"]["schemas"]
    assert {"LiveSnapshot", "LiveUpdate", "LiveError", "Book", "Bbo", "Level"} <= set(schemas)


def test_answers_and_live_messages_validate_against_the_published_schemas(app: FastAPI) -> None:
    spec = app.openapi()
    state = app.state.live
    key = (CLX5_INSTRUMENT, 1)
    for raw, model in ((state.book_json(key, 10), Book), (state.bbo_json(key), Bbo)):
        assert raw is not None
        assert check_units(model.model_validate_json(raw).model_dump()) >= 2
    for kind in ("snapshot", "update"):
        _, payload = state.payload(key, 10, kind)
        message = orjson.loads(payload)
        validate_live(message)
        assert check_units(message) >= 4
    Instrument.model_validate(state.summary(CLX5_INSTRUMENT))

    instrument = str(CLX5_INSTRUMENT)
    calls: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("/v1/instruments", "/v1/instruments", {}, 200, JSON),
        (BOOK, f"/v1/instruments/{instrument}/book", {"depth": 1}, 200, JSON),
        (BOOK, f"/v1/instruments/{instrument}/book", {"publisher_id": 1, "x": 1}, 200, JSON),
        (BBO, f"/v1/instruments/{instrument}/bbo", {"publisher_id": 1}, 200, JSON),
        (BBO, f"/v1/instruments/{instrument}/bbo", {}, 200, JSON),
        (BBO, f"/v1/instruments/{instrument}/bbo", {"publisher_id": 7}, 404, JSON),
        (BOOK, "/v1/instruments/1/book", {}, 404, JSON),
        (BOOK, f"/v1/instruments/{instrument}/book", {"depth": 0}, 422, JSON),
        (BOOK, "/v1/instruments/x/book", {}, 422, JSON),
        ("/v1/replay", "/v1/replay", {}, 200, JSON),
        ("/v1/replay/files", "/v1/replay/files", {}, 200, JSON),
        ("/healthz", "/healthz", {}, 200, JSON),
    ]

    async def answers() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            out = [await http.get(url, params=params) for _, url, params, _, _ in calls]
            out.append(await http.get("/healthz", headers={"Host": "evil.example"}))
            out.append(await http.post("/v1/replay", json={"file": "x.dbn"}))  # control is off
            out.append(await http.post("/v1/replay", json={"file": "x.dbn", "loop": 0}))
            out.append(await http.post("/v1/replay/stop"))
            return out

    got = asyncio.run(answers())
    extra = [
        ("/healthz", "get", 400),
        ("/v1/replay", "post", 403),
        ("/v1/replay", "post", 422),
        ("/v1/replay/stop", "post", 200),
    ]
    checked = 0
    for (path, _, _, status, media), response in zip(calls, got[: len(calls)], strict=True):
        assert response.status_code == status, (path, response.text)
        validate_openapi(spec, path, "get", status, response.json(), media)
        checked += check_units(response.json())
    for (path, method, status), response in zip(extra, got[len(calls) :], strict=True):
        assert response.status_code == status, (path, response.text)
        validate_openapi(spec, path, method, status, response.json(), JSON)
    assert checked > 10
    assert got[-1].json()["started_iso"] is None


def test_websocket_messages_and_errors_are_the_documented_ones(app: FastAPI) -> None:
    with serve(app, app.state.settings) as served:
        url = f"{served.ws}/v1/instruments/{CLX5_INSTRUMENT}/live"
        with ws_connect(f"{url}?depth=2&publisher_id=1") as ws:
            first = ws.recv(timeout=10)
        assert isinstance(first, str)  # a text frame, as every message
        message = orjson.loads(first)
        validate_live(message)
        assert LiveSnapshot.model_validate(message).book is not None
        for query, status, detail in [
            ("?max_hz=abc", 422, WS_NOT_NUMBERS),
            ("?depth=1001", 422, WS_OUT_OF_RANGE),
            ("?publisher_id=7", 404, f"instrument {CLX5_INSTRUMENT} has no publisher 7"),
            ("", 404, "unknown instrument 1"),
        ]:
            target = f"{served.ws}/v1/instruments/1/live" if not query else url + query
            with ws_connect(target) as ws:
                frame = ws.recv(timeout=10)
                with pytest.raises(ConnectionClosed):
                    ws.recv(timeout=10)
            assert isinstance(frame, str), query
            error = orjson.loads(frame)
            assert error == {"type": "error", "status": status, "detail": detail}
            validate_live(error)
            assert ws.close_code == WS_CLOSE_CODES[status] == 4000 + status
