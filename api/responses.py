"""JSON responses of every route: orjson-encoded, and the one error shape (`detail`)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def error_response(status: int, message: str, **extra: Any) -> Response:
    return json_response({"detail": message, **extra}, status)
