"""History from ClickHouse: the book as of a time, BBO changes and bars."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response

from api import store as history
from api.dependencies import History, history_publisher, require_token
from api.fastpath import DEFAULT_DEPTH
from api.params import (
    MAX_ROWS,
    DepthQuery,
    InstrumentId,
    ParamError,
    PublisherQuery,
    parse_bucket,
    parse_ts,
)
from api.responses import json_response
from mbo_core.storage.queries import mid_bars

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])


@router.get("/instruments/{instrument_id}/book/at", summary="Book as of a time (ClickHouse)")
async def book_at(
    store: History,
    instrument_id: InstrumentId,
    ts: Annotated[str, Query(max_length=64, description="ns since the epoch or ISO-8601.")],
    depth: DepthQuery = DEFAULT_DEPTH,
    publisher_id: PublisherQuery = None,
) -> Response:
    at_ns = parse_ts(ts, "ts")
    publisher = await history_publisher(store, instrument_id, publisher_id)
    book = await history.book_at(store, instrument_id, at_ns, depth, publisher)
    if book is None:
        raise HTTPException(404, f"no snapshot of instrument {instrument_id} at or before {ts}")
    return json_response(book)


@router.get("/instruments/{instrument_id}/bbo/history", summary="BBO changes or bars (ClickHouse)")
async def bbo_history(
    store: History,
    instrument_id: InstrumentId,
    start: Annotated[str, Query(max_length=64, description="Start (inclusive), ns or ISO.")],
    end: Annotated[str, Query(max_length=64, description="End (exclusive), ns or ISO.")],
    bucket: Annotated[
        str | None, Query(max_length=16, description="Bar width, e.g. 1s, 1m; omitted: rows.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ROWS, description="Most rows/bars.")] = 10_000,
    publisher_id: PublisherQuery = None,
) -> Response:
    start_ns, end_ns = parse_ts(start, "start"), parse_ts(end, "end")
    if end_ns < start_ns:
        raise ParamError("end", "end must not be before start")
    step_ns = None if bucket is None else parse_bucket(bucket)
    publisher = await history_publisher(store, instrument_id, publisher_id)
    if step_ns is None:
        query = history.bbo_rows_query(instrument_id, publisher, start_ns, end_ns, limit)
        return json_response({"rows": [history.bbo_from_row(r) for r in await store.rows(query)]})
    query = mid_bars(
        instrument_id, start_ns, end_ns, step_ns=step_ns, publisher_id=publisher, limit=limit
    )
    return json_response({"bars": [history.bar_from_row(r) for r in await store.rows(query)]})
