"""Replay control: start, pause, resume and stop the replay of a file of the replay directory
(api.replay_control), and its status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.dependencies import ReplayControl, require_token
from api.responses import errors, json_response

router = APIRouter(
    prefix="/v1", dependencies=[Depends(require_token)], responses=errors(400, 401, 403, 409, 422)
)


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


@router.get("/replay", summary="Replay status")
async def replay_status(control: ReplayControl) -> Response:
    return json_response(control.status())


@router.get("/replay/files", summary="Files the replay may use")
async def replay_files(control: ReplayControl) -> Response:
    return json_response({"directory": str(control.directory) if control.directory else None,
                          "files": control.files()})  # fmt: skip


@router.post("/replay", summary="Start a replay (returns the running one's status if active)")
async def replay_start(
    control: ReplayControl, request: Annotated[ReplayRequest, Body()]
) -> Response:
    started, status = await control.start(request.file, request.rate, request.speed, request.loop)
    return json_response(status, 202 if started else 200)


@router.post("/replay/pause", summary="Pause the replay")
async def replay_pause(control: ReplayControl) -> Response:
    return json_response(control.pause())


@router.post("/replay/resume", summary="Resume the replay")
async def replay_resume(control: ReplayControl) -> Response:
    return json_response(control.resume())


@router.post("/replay/stop", summary="Stop the replay")
async def replay_stop(control: ReplayControl) -> Response:
    return json_response(await control.stop())
