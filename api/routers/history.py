"""History from ClickHouse: the book as of a time, BBO changes and bars."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from api import store as history
from api.dependencies import History, history_book, require_token
from api.fastpath import DEFAULT_DEPTH
from api.models import Bars, BboRows, Book, Runs
from api.params import (
    MAX_ROWS,
    DepthQuery,
    InstrumentId,
    ParamError,
    PublisherQuery,
    parse_bucket,
    parse_ts,
)
from api.responses import errors, json_response
from mbo_core.storage.queries import mid_bars

router = APIRouter(
    prefix="/v1", dependencies=[Depends(require_token)], responses=errors(400, 401, 404, 422, 503)
)

ReplayIdQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description="The run's replay id (see /runs); omitted: the instrument's latest run.",
    ),
]
ReplayCopyQuery = Annotated[
    int | None,
    Query(ge=0, le=2**32 - 1, description="The copy of a looped replay; omitted: its latest."),
]


@router.get(
    "/instruments/{instrument_id}/runs",
    summary="The runs the history holds (ClickHouse)",
    response_model=Runs,
)
async def runs(store: History, instrument_id: InstrumentId) -> Response:
    """Every run of the instrument's data that ClickHouse holds, newest first: each replay (and
    each copy of a looped one) starts from empty books and is stored apart; the history routes
    read the latest (`latest: true`) unless given `replay_id` (and `replay_copy`)."""
    found = await history.runs(store, instrument_id)
    if not found:
        raise HTTPException(404, f"unknown instrument {instrument_id} (nothing in ClickHouse)")
    return json_response({"instrument_id": instrument_id, "runs": found})


@router.get(
    "/instruments/{instrument_id}/book/at",
    summary="Book as of a time (ClickHouse)",
    response_model=Book,
)
async def book_at(
    store: History,
    instrument_id: InstrumentId,
    ts: Annotated[str, Query(max_length=64, description="ns since the epoch or ISO-8601.")],
    depth: DepthQuery = DEFAULT_DEPTH,
    publisher_id: PublisherQuery = None,
    replay_id: ReplayIdQuery = None,
    replay_copy: ReplayCopyQuery = None,
) -> Response:
    """The last snapshot at or before `ts` in the run (the latest unless named)."""
    at_ns = parse_ts(ts, "ts")
    run, publisher = await history_book(store, instrument_id, publisher_id, replay_id, replay_copy)
    book = await history.book_at(store, instrument_id, at_ns, depth, publisher, run)
    if book is None:
        raise HTTPException(404, f"no snapshot of instrument {instrument_id} at or before {ts}")
    return json_response({**book, "run": history.run_json(run)})


@router.get(
    "/instruments/{instrument_id}/bbo/history",
    summary="BBO changes or bars (ClickHouse)",
    response_model=BboRows | Bars,
)
async def bbo_history(
    request: Request,
    store: History,
    instrument_id: InstrumentId,
    start: Annotated[str, Query(max_length=64, description="Start (inclusive), ns or ISO.")],
    end: Annotated[str, Query(max_length=64, description="End (exclusive), ns or ISO.")],
    bucket: Annotated[
        str | None, Query(max_length=16, description="Bar width, e.g. 1s, 1m; omitted: rows.")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_ROWS, description=f"Most rows/bars per page (1-{MAX_ROWS}).")
    ] = 10_000,
    after: Annotated[
        str | None,
        Query(max_length=96, description="Rows only: the `next` page's cursor, as given."),
    ] = None,
    publisher_id: PublisherQuery = None,
    replay_id: ReplayIdQuery = None,
    replay_copy: ReplayCopyQuery = None,
) -> Response:
    """A page of BBO changes (`rows`, without `bucket`) or of bars (`bars`, with it) in
    [start, end), oldest first. `truncated` says whether more follow; `next` is then the URL of
    the next page (rows: the same query after a cursor; bars: the same query from the next bar).
    Each page holds at most `limit`. Bars: OHLC of the mid and the last spread, exact decimal
    strings in price units. One run is read (`run`): the latest unless `replay_id` (and
    `replay_copy`) name another, so replays and loops of the same data never show twice."""
    start_ns, end_ns = parse_ts(start, "start"), parse_ts(end, "end")
    if end_ns < start_ns:
        raise ParamError("end", "end must not be before start")
    step_ns = None if bucket is None else parse_bucket(bucket)
    cursor = None if after is None else _parse_cursor(after)
    if cursor is not None and step_ns is not None:
        raise ParamError("after", "after pages rows; bars page with start (see next)")
    run, publisher = await history_book(store, instrument_id, publisher_id, replay_id, replay_copy)
    page_of = {"run": history.run_json(run)}
    # Later pages stay in this run even when a newer one starts meanwhile.
    base_url = request.url.include_query_params(replay_id=run[0], replay_copy=str(run[1]))
    if step_ns is None:
        query = history.bbo_rows_query(
            instrument_id, publisher, start_ns, end_ns, limit + 1, run, after=cursor
        )
        rows = await store.rows(query)
        truncated = len(rows) > limit
        rows = rows[:limit]
        next_url = (
            str(base_url.include_query_params(after=_format_cursor(history.row_cursor(rows[-1]))))
            if truncated
            else None
        )
        return json_response(
            {**page_of, "rows": [history.bbo_from_row(r) for r in rows], "truncated": truncated,
             "next": next_url}
        )  # fmt: skip
    query = mid_bars(
        instrument_id, start_ns, end_ns, step_ns=step_ns, publisher_id=publisher, limit=limit + 1,
        run=run,
    )  # fmt: skip
    bars = [history.bar_from_row(r) for r in await store.rows(query)]
    truncated = len(bars) > limit
    bars = bars[:limit]
    next_url = (
        str(base_url.include_query_params(start=str(bars[-1]["t"] + step_ns)))
        if truncated
        else None
    )
    return json_response({**page_of, "bars": bars, "truncated": truncated, "next": next_url})


def _parse_cursor(text: str) -> history.Cursor:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise ParamError("after", "after must be a cursor as given in `next`")
    ts, partition, offset, index = (int(p) for p in parts)
    return ts, partition, offset, index


def _format_cursor(cursor: history.Cursor) -> str:
    return ".".join(str(part) for part in cursor)
