"""What the routers share: the app's state (set by api.app.create_app on `app.state`), the
bearer-token check and the lookups of a book in the live state and in ClickHouse."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from starlette.requests import HTTPConnection

from api import store as history
from api.auth import bearer, token_matches
from api.replay_control import ReplayController
from api.state import Key, LiveState
from api.store import Store
from mbo_core.settings import Settings


def live_state(connection: HTTPConnection) -> LiveState:
    state: LiveState = connection.app.state.live
    return state


def store(request: Request) -> Store:
    found: Store = request.app.state.store
    return found


def replay_controller(request: Request) -> ReplayController:
    controller: ReplayController = request.app.state.replay
    return controller


def settings(connection: HTTPConnection) -> Settings:
    found: Settings = connection.app.state.settings
    return found


Live = Annotated[LiveState, Depends(live_state)]
History = Annotated[Store, Depends(store)]
Replays = Annotated[ReplayController, Depends(replay_controller)]
AppSettings = Annotated[Settings, Depends(settings)]


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
    if not authorized(request):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


def live_key(state: LiveState, instrument_id: int, publisher_id: int | None) -> Key:
    """The live book asked for; 404 for an unknown instrument or publisher."""
    if not state.has_instrument(instrument_id):
        raise HTTPException(404, f"unknown instrument {instrument_id}")
    key = state.resolve(instrument_id, publisher_id)
    if key is None:
        raise HTTPException(404, f"instrument {instrument_id} has no publisher {publisher_id}")
    return key


async def history_publisher(store: Store, instrument_id: int, publisher_id: int | None) -> int:
    """The publisher whose history is asked for (the default one if none); 404 if unknown."""
    publishers = await history.publishers_of(store, instrument_id)
    if not publishers:
        raise HTTPException(404, f"unknown instrument {instrument_id} (nothing in ClickHouse)")
    if publisher_id is None:
        chosen = history.default_publisher(publishers)
        assert chosen is not None
        return chosen
    if publisher_id not in publishers or publisher_id == 0:
        raise HTTPException(404, f"instrument {instrument_id} has no publisher {publisher_id}")
    return publisher_id
