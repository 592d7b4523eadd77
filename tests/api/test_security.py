"""The API's security model (docs/api.md): the token for state-changing requests off loopback,
the Host header check (DNS rebinding) on every route including the fast path, and the Origin
check of state-changing requests and WebSocket handshakes (CSRF, WebSocket hijacking).
In-process ASGI calls, and one real uvicorn for the WebSocket handshake; no broker."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from starlette.types import Message
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin

from api.app import create_app
from api.auth import HostPolicy, OriginPolicy, host_name
from mbo_core.prices import UNDEF_PRICE
from mbo_core.quality import QUALITY_FIELDS
from mbo_core.wire import EventContext, encode_snapshots
from producer.app import produce_file
from tests.api.pipeline import run_async, serve
from tests.conftest import make_settings

BOOK = "/v1/instruments/7/book"
#: A start that passes every check before the route's own: the route answers 422 (no such file).
START = ("/v1/replay", {"file": "nope.dbn"})


def _app(tmp_path: Path, **api: Any) -> FastAPI:
    settings = make_settings(data_dir=tmp_path / "data", api={"replay_dir": str(tmp_path), **api})
    app = create_app(settings, consume=False, file_replay=produce_file)
    # One book (instrument 7, publisher 1) for the fast path to answer.
    snapshot = encode_snapshots(
        EventContext(7, "X", source_partition=0, source_offset=0, sent_ns=1), depth=1,
        publisher_id=np.array([1]), record_index=np.array([0]), ts_event=np.array([5]),
        ts_recv=np.array([6]), sequence=np.array([1]),
        bids=np.array([[[1_500_000_000, 2, 1]]], dtype=np.int64),
        asks=np.array([[[UNDEF_PRICE, 0, 0]]], dtype=np.int64),
        quality=np.zeros((1, len(QUALITY_FIELDS)), dtype=np.uint64),
        consolidated=np.array([False]), final=np.array([False]),
    )  # fmt: skip
    app.state.live.apply(snapshot.value, snapshot.headers)
    return app


def _calls(app: FastAPI, *requests: tuple[str, str, dict[str, str]]) -> list[httpx.Response]:
    """(method, path, headers) in order; POSTs carry START's body."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            out = []
            for method, path, headers in requests:
                body = START[1] if method == "POST" else None
                out.append(await http.request(method, path, json=body, headers=headers))
            return out

    result: list[httpx.Response] = run_async(run())
    return result


def _status(responses: list[httpx.Response]) -> list[int]:
    return [response.status_code for response in responses]


# ---- the token ------------------------------------------------------------------------------


def test_a_set_token_is_needed_by_every_v1_route(tmp_path: Path) -> None:
    app = _app(tmp_path, token="s3cret")
    right, wrong = {"Authorization": "Bearer s3cret"}, {"Authorization": "Bearer nope"}
    responses = _calls(
        app,
        ("GET", "/v1/replay", {}), ("GET", "/v1/replay", wrong), ("POST", "/v1/replay", {}),
        ("POST", "/v1/replay", wrong), ("POST", "/v1/replay/stop", {}),
        ("POST", "/v1/replay", right), ("GET", "/v1/replay", right), ("GET", "/healthz", {}),
    )  # fmt: skip
    assert _status(responses) == [401, 401, 401, 401, 401, 422, 200, 200]
    assert responses[2].json()["detail"] == "missing or wrong bearer token"
    assert responses[2].headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "api.example.com"])
def test_off_loopback_state_changing_routes_need_a_token(tmp_path: Path, host: str) -> None:
    app = _app(tmp_path, host=host)
    start, pause, resume, stop, status, files, instruments, book = _calls(
        app,
        ("POST", "/v1/replay", {}), ("POST", "/v1/replay/pause", {}),
        ("POST", "/v1/replay/resume", {}), ("POST", "/v1/replay/stop", {}),
        ("GET", "/v1/replay", {}), ("GET", "/v1/replay/files", {}), ("GET", "/v1/instruments", {}),
        ("GET", BOOK, {}),
    )  # fmt: skip
    for refused in (start, pause, resume, stop):
        assert refused.status_code == 403, refused.text
        detail = refused.json()["detail"]
        assert "MBO_API__TOKEN" in detail and host in detail and "\n" not in detail
    # Reads stay open, as on loopback.
    assert _status([status, files, instruments, book]) == [200, 200, 200, 200]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_on_loopback_state_changing_routes_need_no_token(tmp_path: Path, host: str) -> None:
    (start,) = _calls(_app(tmp_path, host=host), ("POST", "/v1/replay", {}))
    assert start.status_code == 422 and start.json()["detail"][0]["loc"] == ["body", "file"]


def test_off_loopback_a_set_token_opens_state_changing_routes(tmp_path: Path) -> None:
    app = _app(tmp_path, host="0.0.0.0", token="s3cret")
    bearer = {"Authorization": "Bearer s3cret"}
    assert _status(_calls(app, ("POST", "/v1/replay", {}), ("POST", "/v1/replay", bearer))) == [
        401,
        422,
    ]


# ---- the Host header ------------------------------------------------------------------------


def test_unknown_host_is_a_400_on_every_route_and_the_fast_path(tmp_path: Path) -> None:
    app = _app(tmp_path)
    fast_path = app.state.fast_path
    evil = {"Host": "evil.example"}
    hits = fast_path.hits
    responses = _calls(
        app,
        ("GET", BOOK, evil), ("GET", "/v1/instruments", evil), ("GET", "/healthz", evil),
        ("GET", "/", evil), ("POST", "/v1/replay", evil), ("OPTIONS", "/v1/replay", evil),
        ("GET", BOOK, {"Host": "evil.example:8000"}), ("GET", BOOK, {"Host": "localhost.evil"}),
        ("GET", BOOK, {"Host": "::1"}), ("GET", BOOK, {"Host": "127.0.0.1:x"}),
    )  # fmt: skip
    assert _status(responses) == [400] * len(responses)
    assert fast_path.hits == hits
    detail = responses[0].json()["detail"]
    assert detail.startswith("unknown Host header 'evil.example'")
    assert "MBO_API__ALLOWED_HOSTS" in detail


def test_loopback_names_and_ip_addresses_are_answered(tmp_path: Path) -> None:
    app = _app(tmp_path)
    fast_path = app.state.fast_path
    expected = app.state.live.book_json((7, 1), 10)
    for host, fast in [
        ("127.0.0.1", True), ("127.0.0.1:8000", True), ("localhost:1234", True),
        ("[::1]:8000", True), ("[::1]", True), ("LOCALHOST:8000", False), ("localhost.", False),
        ("10.1.2.3:8000", False), ("[fe80::1]:80", False),
    ]:  # fmt: skip
        hits = fast_path.hits
        (response,) = _calls(app, ("GET", BOOK, {"Host": host}))
        assert response.status_code == 200 and response.content == expected, host
        # The fast path answers the plain spellings; the rest goes through the guard to the route.
        assert fast_path.hits - hits == fast, host


def test_allowed_hosts_add_names_and_wildcards(tmp_path: Path) -> None:
    app = _app(tmp_path, allowed_hosts="api.example.com, *.internal.example")
    fast_path = app.state.fast_path
    hits = fast_path.hits
    responses = _calls(
        app,
        *[("GET", BOOK, {"Host": host}) for host in ("api.example.com", "api.example.com:443",
          "a.b.internal.example", "internal.example", "example.com")],
    )  # fmt: skip
    assert _status(responses) == [200, 200, 200, 400, 400]
    assert fast_path.hits == hits + 2  # the listed name; the wildcard's take the full stack
    (anything,) = _calls(_app(tmp_path, allowed_hosts="*"), ("GET", BOOK, {"Host": "x.example"}))
    assert anything.status_code == 200


def test_a_bind_name_is_answered(tmp_path: Path) -> None:
    (response,) = _calls(_app(tmp_path, host="box.lan"), ("GET", BOOK, {"Host": "box.lan:8000"}))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Example.COM", "example.com"), ("example.com:80", "example.com"), ("x.", "x"),
        ("[::1]:8000", "::1"), ("[::1]", "::1"), ("localhost:", "localhost"),
        ("::1", None), ("[::1", None), ("[::1]x", None), ("a:b", None), ("a:1:2", None),
        ("", None), (":80", None), ("a:\u0661", None),
    ],
)  # fmt: skip
def test_host_name(header: str, name: str | None) -> None:
    assert host_name(header) == name


def test_host_policy_raw_check_never_allows_what_the_full_check_refuses() -> None:
    policy = HostPolicy("0.0.0.0", ["api.example.com", "*.example.org"])
    assert not policy.allows(None)
    for header in ["localhost", "localhost:80", "[::1]:1", "api.example.com:443", "0.0.0.0:8000",
                   "evil.example", "evil.example:80", "x.example.org", "localhost:", "::1",
                   "[::1]:", "api.example.com:x", "127.0.0.1:80:80"]:  # fmt: skip
        if policy.allows_raw(header.encode()):
            assert policy.allows(header), header


def test_allowed_hosts_setting_is_checked() -> None:
    assert make_settings(api={"allowed_hosts": " A.example ,*.b.example,*"}).api.allowed_host_list(
    ) == ["a.example", "*.b.example", "*"]  # fmt: skip
    for bad in ["http://a.example", "a.example:8000", "a.*.example", "*example.com", "a/b"]:
        with pytest.raises(ValueError, match="is not a host name"):
            make_settings(api={"allowed_hosts": bad})


# ---- the Origin header ----------------------------------------------------------------------


def test_cross_origin_state_changing_requests_are_refused(tmp_path: Path) -> None:
    app = _app(tmp_path, cors_origins="http://ui.example")
    responses = _calls(
        app,
        ("POST", "/v1/replay", {"Origin": "http://evil.example"}),
        ("POST", "/v1/replay/stop", {"Origin": "http://evil.example"}),
        ("POST", "/v1/replay", {"Origin": "null"}),
        ("POST", "/v1/replay", {"Origin": "http://127.0.0.1:9999"}),  # another port
        ("POST", "/v1/replay", {"Origin": "http://ui.example.evil"}),
        ("DELETE", "/v1/replay", {"Origin": "http://evil.example"}),
    )  # fmt: skip
    assert _status(responses) == [403] * len(responses)
    detail = responses[0].json()["detail"]
    assert detail.startswith("cross-origin request refused: origin 'http://evil.example'")
    assert "access-control-allow-origin" not in responses[0].headers


def test_a_simple_form_post_from_another_site_is_refused(tmp_path: Path) -> None:
    # What a page of any site may send without a CORS preflight.
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=_app(tmp_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8000") as http:
            return await http.post(
                "/v1/replay/stop", content=b"x=1", headers={"Origin": "https://evil.example",
                "Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip

    assert run_async(run()).status_code == 403


def test_same_origin_approved_origin_and_no_origin_are_accepted(tmp_path: Path) -> None:
    app = _app(tmp_path, cors_origins="http://ui.example")
    responses = _calls(
        app,
        ("POST", "/v1/replay", {}),
        ("POST", "/v1/replay", {"Origin": "http://127.0.0.1"}),
        ("POST", "/v1/replay", {"Origin": "https://127.0.0.1"}),  # TLS ended by a proxy
        ("POST", "/v1/replay", {"Origin": "http://localhost:8000", "Host": "localhost:8000"}),
        ("POST", "/v1/replay", {"Origin": "http://ui.example"}),
        # Reads are CORS's business: answered, without an allow-origin header for this origin.
        ("GET", "/v1/replay", {"Origin": "http://evil.example"}),
    )  # fmt: skip
    assert _status(responses) == [422, 422, 422, 422, 422, 200]
    assert responses[4].headers["access-control-allow-origin"] == "http://ui.example"
    assert "access-control-allow-origin" not in responses[5].headers


def test_cors_star_approves_every_origin(tmp_path: Path) -> None:
    app = _app(tmp_path, cors_origins="*")
    (response,) = _calls(app, ("POST", "/v1/replay", {"Origin": "http://evil.example"}))
    assert response.status_code == 422


def test_origin_policy() -> None:
    policy = OriginPolicy(["http://UI.example/"])
    assert policy.allows("http://ui.example", "127.0.0.1")
    assert policy.allows("http://api.example:8000", "API.example:8000")
    assert not policy.allows("http://api.example", "api.example:8000")
    assert not policy.allows("ftp://api.example", "api.example")
    assert not policy.allows("api.example", "api.example")
    assert not policy.allows("http://api.example", None)


# ---- WebSocket handshakes -------------------------------------------------------------------


def _handshake(
    app: FastAPI, headers: list[tuple[bytes, bytes]], *, denial: bool = True
) -> list[Message]:
    """What the app sends for a WebSocket handshake to the live feed, up to its answer (the
    accept, a close, or a denial response when the server offers that extension)."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] in ("websocket.accept", "websocket.close") or (
            message["type"] == "websocket.http.response.body"
        ):
            raise _AnsweredError

    scope = {
        "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws",
        "path": "/v1/instruments/7/live", "raw_path": b"/v1/instruments/7/live",
        "query_string": b"", "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000), "subprotocols": [],
        "extensions": {"websocket.http.response": {}} if denial else {},
    }  # fmt: skip

    async def run() -> None:
        with contextlib.suppress(_AnsweredError):
            await app(scope, receive, send)

    run_async(run())
    return sent


class _AnsweredError(Exception):
    pass


def test_websocket_handshakes_from_foreign_origins_or_hosts_are_refused(tmp_path: Path) -> None:
    app = _app(tmp_path, cors_origins="http://ui.example")
    local = (b"host", b"127.0.0.1:8000")
    evil = [local, (b"origin", b"http://evil.example")]
    start, body = _handshake(app, evil)
    assert start["type"] == "websocket.http.response.start" and start["status"] == 403
    assert orjson.loads(body["body"])["detail"].startswith("cross-origin request refused")
    assert _handshake(app, evil, denial=False) == [
        {"type": "websocket.close", "code": 1008, "reason": "cross-origin request refused"}
    ]
    unknown = [(b"host", b"evil.example")]
    assert _handshake(app, unknown)[0]["status"] == 400
    assert _handshake(app, unknown, denial=False)[0]["reason"] == "unknown Host header"
    for accepted in ([local], [local, (b"origin", b"http://127.0.0.1:8000")],
                     [local, (b"origin", b"http://ui.example")]):  # fmt: skip
        assert [m["type"] for m in _handshake(app, accepted)] == ["websocket.accept"]


def test_websocket_origin_check_through_uvicorn(tmp_path: Path) -> None:
    app = _app(tmp_path)
    with serve(app, app.state.settings) as server:
        url = f"{server.ws}/v1/instruments/7/live?max_hz=5"
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(url, origin=Origin("http://evil.example"))
        assert refused.value.response.status_code == 403
        assert b"cross-origin request refused" in refused.value.response.body
        with ws_connect(url, origin=Origin(server.base)) as ws:
            assert orjson.loads(ws.recv(timeout=10))["type"] == "snapshot"
        with httpx.Client(base_url=server.base, timeout=30) as http:
            assert http.post("/v1/replay/stop", headers={"Origin": "http://evil.example"}
                             ).status_code == 403  # fmt: skip
            assert http.post("/v1/replay/stop", headers={"Origin": server.base}).status_code == 200
            assert http.get(BOOK, headers={"Host": "evil.example"}).status_code == 400
