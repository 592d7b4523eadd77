"""Live books: the instruments seen on the live topics, the latest book and the latest BBO.

The common valid GET of a latest book or BBO never reaches these routes: api.fastpath answers
it in front of FastAPI from the same cached encoding. The response models document the bodies
(OpenAPI); the routes return the encoded JSON as is, so FastAPI validates nothing per request.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from api.dependencies import Live, live_key, require_token
from api.fastpath import DEFAULT_DEPTH
from api.models import Bbo, Book, Instrument
from api.params import DepthQuery, InstrumentId, PublisherQuery
from api.responses import errors, json_response

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], responses=errors(400, 401))


@router.get(
    "/instruments", summary="Instruments seen on the live topics", response_model=list[Instrument]
)
async def instruments(state: Live) -> Response:
    return json_response([state.summary(i) for i in state.instrument_ids()])


@router.get(
    "/instruments/{instrument_id}/book",
    summary="Latest book (newest snapshot)",
    response_model=Book,
    responses=errors(404, 422),
)
async def latest_book(
    state: Live,
    instrument_id: InstrumentId,
    depth: DepthQuery = DEFAULT_DEPTH,
    publisher_id: PublisherQuery = None,
) -> Response:
    book = state.book_json(live_key(state, instrument_id, publisher_id), depth)
    if book is None:
        raise HTTPException(404, f"no book yet for instrument {instrument_id}")
    return Response(book, media_type="application/json")


@router.get(
    "/instruments/{instrument_id}/bbo",
    summary="Latest best bid and offer",
    response_model=Bbo,
    responses=errors(404, 422),
)
async def latest_bbo(
    state: Live, instrument_id: InstrumentId, publisher_id: PublisherQuery = None
) -> Response:
    bbo = state.bbo_json(live_key(state, instrument_id, publisher_id))
    if bbo is None:
        raise HTTPException(404, f"no BBO yet for instrument {instrument_id}")
    return Response(bbo, media_type="application/json")
