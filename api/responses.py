"""JSON responses of every route: orjson-encoded, and the one error shape (`detail`)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, Field


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def error_response(status: int, message: str, **extra: Any) -> Response:
    return json_response({"detail": message, **extra}, status)


class ErrorBody(BaseModel):
    """Every error answer: `detail` says what is wrong (for 422, FastAPI's list of
    `{loc, msg, type}` per bad field); 503 also names the `backend` that is down."""

    detail: str | list[dict[str, Any]] = Field(description="What is wrong.")
    backend: str | None = Field(default=None, description="503 only: kafka or clickhouse.")


_MEANINGS = {
    400: "Unknown Host header (DNS-rebinding defence; MBO_API__ALLOWED_HOSTS).",
    401: "Missing or wrong bearer token (MBO_API__TOKEN is set).",
    403: "Refused: a cross-origin write, or replay control off loopback without a token.",
    404: "No such instrument, publisher or snapshot.",
    409: "The replay is busy or not in a state that allows this.",
    422: "A parameter or body field that is not valid (which one and why in detail).",
    503: "A backend (Kafka or ClickHouse) is unavailable.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting these error statuses with the one error body."""
    return {status: {"model": ErrorBody, "description": _MEANINGS[status]} for status in statuses}
