"""What the routers share: the app's state (set by api.app.create_app on `app.state`), the
bearer-token check (and the refusal of state-changing requests without one off loopback) and
the lookups of a book in the live state and in ClickHouse."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar, cast

from fastapi import Depends, HTTPException, Request
from starlette.requests import HTTPConnection

from api import store as history
from api.auth import SAFE_METHODS, bearer, token_matches
from api.params import ParamError
from api.replay_control import ReplayController
from api.state import Key, LiveState
from api.store import Store
from mbo_core.settings import Settings
from mbo_core.storage.queries import Run

T = TypeVar("T")


def _app_state(name: str, kind: type[T]) -> Callable[[HTTPConnection], Awaitable[T]]:
    """A dependency that returns app.state.<name> (HTTP requests and WebSockets alike). A
    coroutine function: FastAPI runs a plain function dependency in a worker thread, a
    round trip through the thread pool on every request for an attribute read."""

    async def dependency(connection: HTTPConnection) -> T:
        return cast(T, getattr(connection.app.state, name))

    dependency.__name__ = name
    return dependency


Live = Annotated[LiveState, Depends(_app_state("live", LiveState))]
History = Annotated[Store, Depends(_app_state("store", Store))]
ReplayControl = Annotated[ReplayController, Depends(_app_state("replay_control", ReplayController))]
AppSettings = Annotated[Settings, Depends(_app_state("settings", Settings))]


def authorized(connection: HTTPConnection) -> bool:
    """The bearer token (or `?token=`, which WebSocket/SSE clients in browsers must use)
    matches the configured one; always true without one."""
    token: str | None = connection.app.state.token
    if token is None:
        return True
    given = bearer(connection.headers.get("authorization", ""))
    if given is None:
        given = connection.query_params.get("token", "")
    return token_matches(given, token.encode())


async def require_token(request: Request) -> None:
    """401 without the right token when one is set; 403 for a state-changing request when none
    is set and the API listens on anything but loopback (api.app._write_refusal)."""
    if not authorized(request):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    refusal: str | None = request.app.state.write_refusal
    if refusal is not None and request.method not in SAFE_METHODS:
        raise HTTPException(403, refusal)


def live_key(state: LiveState, instrument_id: int, publisher_id: int | None) -> Key:
    """The live book asked for; 404 for an unknown instrument or publisher."""
    if not state.has_instrument(instrument_id):
        raise HTTPException(404, f"unknown instrument {instrument_id}")
    key = state.resolve(instrument_id, publisher_id)
    if key is None:
        raise HTTPException(404, f"instrument {instrument_id} has no publisher {publisher_id}")
    return key


async def history_book(
    store: Store,
    instrument_id: int,
    publisher_id: int | None,
    replay_id: str | None,
    replay_copy: int | None,
) -> tuple[Run, int]:
    """(run, publisher) whose history is asked for: the instrument's latest run, or replay
    `replay_id`'s latest copy, or that copy; the default publisher if none is named. 404 for an
    instrument without history, a run or publisher it does not have; 422 for a copy without
    its replay."""
    if replay_id is None and replay_copy is not None:
        raise ParamError("replay_copy", "replay_copy needs replay_id")
    run = (
        await history.latest_run(store, instrument_id, replay_id)
        if replay_copy is None
        else (str(replay_id), replay_copy)
    )
    publishers = [] if run is None else await history.publishers_of(store, instrument_id, run)
    if not publishers:
        if replay_id is None:
            raise HTTPException(404, f"unknown instrument {instrument_id} (nothing in ClickHouse)")
        copy = "" if replay_copy is None else f" copy {replay_copy}"
        raise HTTPException(
            404, f"instrument {instrument_id} has no run {replay_id!r}{copy} (see /runs)"
        )
    assert run is not None
    if publisher_id is None:
        chosen = history.default_publisher(publishers)
        assert chosen is not None
        return run, chosen
    if publisher_id not in publishers or publisher_id == 0:
        raise HTTPException(404, f"instrument {instrument_id} has no publisher {publisher_id}")
    return run, publisher_id
