"""JSON responses of every route: orjson-encoded, and the one error shape (`detail`)."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def error_response(status: int, message: str, **extra: Any) -> Response:
    return json_response({"detail": message, **extra}, status)


class ErrorBody(BaseModel):
    """Every error answer but 422: `detail` says what is wrong; 503 also names the `backend`
    that is down."""

    model_config = ConfigDict(extra="forbid")

    detail: str = Field(description="What is wrong.")
    backend: Literal["kafka", "clickhouse"] | None = Field(
        default=None, description="503 only: the backend that is down."
    )


class ValidationIssue(BaseModel):
    """One bad parameter or body field (FastAPI's validation error item)."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(description='Where: ["query", "depth"], ["body", "file"], ...')
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="The kind of error, e.g. value_error, int_parsing.")


class ValidationErrorBody(BaseModel):
    """422: every bad parameter or body field, each named in `loc`."""

    model_config = ConfigDict(extra="forbid")

    detail: list[ValidationIssue]


_MEANINGS = {
    400: "Unknown Host header (DNS-rebinding defence; MBO_API__ALLOWED_HOSTS).",
    401: "Missing or wrong bearer token (MBO_API__TOKEN is set).",
    403: "Refused: a cross-origin write, a write off loopback without a token, or replay "
    "control off or a file outside its directory.",
    404: "No such instrument, publisher or snapshot.",
    409: "Another replay runs into the records topic.",
    422: "A parameter or body field that is not valid (which one and why in detail).",
    503: "A backend (Kafka or ClickHouse) is unavailable.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting these error statuses with their body: ErrorBody, and
    ValidationErrorBody for 422."""
    return {
        status: {
            "model": ValidationErrorBody if status == 422 else ErrorBody,
            "description": _MEANINGS[status],
        }
        for status in statuses
    }
