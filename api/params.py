"""The API's parameters: the typed path and query parameters the routers share (bounds and
OpenAPI text), and the parsing of its own formats: timestamps (ns or ISO-8601), bucket widths.

A bad value raises ParamError naming the parameter; the app turns it into a 422 shaped like
FastAPI's own validation errors, so clients see one error format.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Final

from fastapi import Query
from pydantic import Field

from api.fastpath import MAX_INSTRUMENT, MAX_PUBLISHER
from mbo_core.wire.layouts import MBP10_DEPTH

#: Levels per side a book can have here: snapshots travel as DBN MBP-10 records, so asking for
#: more is a 422, not a silent clamp to 10.
MAX_DEPTH = MBP10_DEPTH
MAX_ROWS = 100_000

InstrumentId = Annotated[int, Field(ge=0, le=MAX_INSTRUMENT)]
PublisherQuery = Annotated[
    int | None,
    Query(ge=0, le=MAX_PUBLISHER, description="Publisher id; omitted: the consolidated book if the "
          "instrument has several publishers, else its only one."),
]  # fmt: skip
DepthQuery = Annotated[
    int,
    Query(ge=1, le=MAX_DEPTH, description=f"Levels per side (1-{MAX_DEPTH}: books are kept to "
          f"{MAX_DEPTH} levels, DBN MBP-10)."),
]  # fmt: skip
MaxHzQuery = Annotated[
    float, Query(gt=0, le=1000, description="Most updates per second (capped by the server).")
]

MAX_NS: Final = 2**63 - 1
_INTEGER = re.compile(r"^-?\d+$")
# fromisoformat keeps at most microseconds: the fraction is cut off and added back exactly.
_FRACTION = re.compile(r"^(?P<head>[^.,]+)[.,](?P<digits>\d{1,9})(?P<tail>(?:[Zz]|[+-]\d.*)?)$")
_BUCKET = re.compile(r"^(?P<n>\d{1,9})(?P<unit>ns|us|ms|s|m|h|d)$")
_UNIT_NS: Final = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}


class ParamError(ValueError):
    """A query or body parameter the API cannot use."""

    def __init__(self, field: str, message: str, location: str = "query") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.location = location


def parse_ts(value: str, field: str) -> int:
    """Nanoseconds since the epoch from an integer string or ISO-8601 (naive means UTC)."""
    text = value.strip()
    ns = int(text) if _INTEGER.match(text) else _parse_iso(text, field)
    if not 0 <= ns <= MAX_NS:
        raise ParamError(field, f"{field} must be between 0 and {MAX_NS} ns since the epoch")
    return ns


def _parse_iso(text: str, field: str) -> int:
    fraction_ns = 0
    match = _FRACTION.match(text)
    if match:
        digits = match.group("digits")
        fraction_ns = int(digits.ljust(9, "0"))
        text = match.group("head") + match.group("tail")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ParamError(
            field, f"{field} must be nanoseconds since the epoch or an ISO-8601 time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Whole seconds through integer arithmetic: floats would lose nanoseconds.
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    delta = moment - epoch
    if delta.microseconds:
        raise ParamError(field, f"{field}: unexpected fraction of a second")
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + fraction_ns


def parse_bucket(value: str, field: str = "bucket") -> int:
    """A bucket width like `500ms`, `1s`, `5m`, `1h`, `1d` in nanoseconds (at least 1 ms)."""
    match = _BUCKET.match(value.strip())
    if not match:
        raise ParamError(field, f"{field} must look like 100ms, 1s, 5m, 1h or 1d")
    ns = int(match.group("n")) * _UNIT_NS[match.group("unit")]
    if not 1_000_000 <= ns <= 366 * _UNIT_NS["d"]:
        raise ParamError(field, f"{field} must be between 1ms and 366d")
    return ns
