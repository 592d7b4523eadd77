"""Path and query parameters shared by the routers, with their bounds and OpenAPI text."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import Field

from api.fastpath import MAX_INSTRUMENT, MAX_PUBLISHER

MAX_DEPTH = 1000
MAX_ROWS = 100_000

InstrumentId = Annotated[int, Field(ge=0, le=MAX_INSTRUMENT)]
PublisherQuery = Annotated[
    int | None,
    Query(ge=0, le=MAX_PUBLISHER, description="Publisher id; omitted: the consolidated book if the "
          "instrument has several publishers, else its only one."),
]  # fmt: skip
DepthQuery = Annotated[int, Query(ge=1, le=MAX_DEPTH, description="Levels per side.")]
MaxHzQuery = Annotated[
    float, Query(gt=0, le=1000, description="Most updates per second (capped by the server).")
]
