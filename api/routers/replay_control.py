"""Replay control: start, pause, resume and stop the replay of a file of the replay directory
(api.replay_control), and its status (api.models.ReplayStatus, with `started_iso`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.dependencies import ReplayControl, require_token
from api.models import ReplayFiles, ReplayStatus
from api.responses import errors, json_response
from mbo_core.timestamps import with_iso

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], responses=errors(400, 401))
#: The writes: also refused by the Origin check and, off loopback without a token, always (403).
_WRITE = errors(403)


class ReplayRequest(BaseModel):
    file: str = Field(min_length=1, max_length=4096, description="File in the replay directory.")
    # Finite and bounded below: a replay at 1e-300 records/s would hold the only replay slot.
    rate: float | None = Field(
        default=None, ge=1, le=1e9, allow_inf_nan=False, description="Records per second."
    )
    speed: float | None = Field(
        default=None, ge=1e-3, le=1e6, allow_inf_nan=False, description="x recorded time."
    )
    loop: int = Field(default=1, ge=1, le=1000, description="Copies of the file to replay.")


def _status(status: dict[str, Any], code: int = 200) -> Response:
    return json_response(with_iso(status, "started_ns"), code)


@router.get("/replay", summary="Replay status", response_model=ReplayStatus)
async def replay_status(control: ReplayControl) -> Response:
    return _status(control.status())


@router.get("/replay/files", summary="Files the replay may use", response_model=ReplayFiles)
async def replay_files(control: ReplayControl) -> Response:
    return json_response({"directory": str(control.directory) if control.directory else None,
                          "files": control.files()})  # fmt: skip


@router.post(
    "/replay",
    summary="Start a replay (returns the running one's status if active)",
    response_model=ReplayStatus,
    responses={
        200: {"description": "A replay is running or paused: its status (nothing started)."},
        202: {"model": ReplayStatus, "description": "Started: the new replay's status."},
        **errors(403, 409, 422),
    },
)
async def replay_start(
    control: ReplayControl, request: Annotated[ReplayRequest, Body()]
) -> Response:
    """202 and the new replay's status when it started; 200 and the active replay's status,
    starting nothing, while one is running or paused."""
    started, status = await control.start(request.file, request.rate, request.speed, request.loop)
    return _status(status, 202 if started else 200)


@router.post(
    "/replay/pause", summary="Pause the replay", response_model=ReplayStatus, responses=_WRITE
)
async def replay_pause(control: ReplayControl) -> Response:
    return _status(control.pause())


@router.post(
    "/replay/resume", summary="Resume the replay", response_model=ReplayStatus, responses=_WRITE
)
async def replay_resume(control: ReplayControl) -> Response:
    return _status(control.resume())


@router.post(
    "/replay/stop", summary="Stop the replay", response_model=ReplayStatus, responses=_WRITE
)
async def replay_stop(control: ReplayControl) -> Response:
    return _status(await control.stop())
