"""Symbols: which instrument id carried which symbol (ClickHouse's `symbology` table, else the
live topics), and every instrument route reachable by symbol.

`/v1/symbols/{symbol}/...` answers 307 with the same route of the symbol's current instrument
(`/v1/instruments/{id}/...`, the query kept), so a client can ask for `CLX5` where it would
ask for 432669; the current instrument is the mapping seen last in event time.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import RedirectResponse, Response

from api.dependencies import History, Live, require_token
from api.models import SymbolMappings, Symbology
from api.responses import errors, json_response
from api.state import LiveState
from api.store import Store
from mbo_core.storage.queries import Query
from mbo_core.timestamps import iso_ns

router = APIRouter(
    prefix="/v1", dependencies=[Depends(require_token)], responses=errors(400, 401, 503)
)

SymbolPath = Annotated[
    str, Path(min_length=1, max_length=64, description="A raw symbol, e.g. CLX5.")
]

_MAPPINGS = """
SELECT symbol, instrument_id, toUnixTimestamp64Nano(min(valid_from)) AS valid_from,
       toUnixTimestamp64Nano(max(valid_to)) AS valid_to, sum(records) AS records
FROM symbology
{where}
GROUP BY symbol, instrument_id
ORDER BY symbol, valid_to DESC, instrument_id
"""


def _mapping(row: dict[str, Any]) -> dict[str, Any]:
    valid_from, valid_to = int(row["valid_from"]), int(row["valid_to"])
    return {
        "symbol": str(row["symbol"]),
        "instrument_id": int(row["instrument_id"]),
        "valid_from": valid_from,
        "valid_from_iso": iso_ns(valid_from),
        "valid_to": valid_to,
        "valid_to_iso": iso_ns(valid_to),
        "records": int(row["records"]),
    }


async def _mappings(store: Store, symbol: str | None) -> list[dict[str, Any]]:
    where = "" if symbol is None else "WHERE symbol = {symbol:String}"
    parameters = {} if symbol is None else {"symbol": symbol}
    rows = await store.rows(Query(_MAPPINGS.format(where=where).strip(), parameters))
    return [_mapping(row) for row in rows]


async def _instrument_of(store: Store, state: LiveState, symbol: str) -> int:
    """The symbol's current instrument: ClickHouse's latest mapping, else the live view's."""
    stored = await _mappings(store, symbol)
    if stored:
        return int(stored[0]["instrument_id"])
    live = [i for i in state.instrument_ids() if state.summary(i)["symbol"] == symbol]
    if live:
        return int(max(live, key=lambda i: state.summary(i)["last_update_ns"]))
    raise HTTPException(404, f"unknown symbol {symbol!r}")


@router.get("/symbology", summary="Every symbol-instrument mapping (ClickHouse)",
            response_model=Symbology)  # fmt: skip
async def symbology(store: History) -> Response:
    """Each (symbol, instrument id) pair stored, with the event-time interval it held over and
    its records, by symbol then newest first."""
    return json_response({"mappings": await _mappings(store, None)})


@router.get(
    "/symbols/{symbol}",
    summary="The instruments a symbol names (ClickHouse)",
    response_model=SymbolMappings,
    responses=errors(404, 422),
)
async def symbol_mappings(store: History, state: Live, symbol: SymbolPath) -> Response:
    """The symbol's mappings, newest first: `instrument_id` is the one its routes redirect to."""
    mappings = await _mappings(store, symbol)
    if not mappings:
        instrument = await _instrument_of(store, state, symbol)  # the live view knows it
        return json_response({"symbol": symbol, "instrument_id": instrument, "mappings": []})
    return json_response(
        {"symbol": symbol, "instrument_id": mappings[0]["instrument_id"], "mappings": mappings}
    )


@router.get(
    "/symbols/{symbol}/{route:path}",
    summary="Any instrument route by symbol (307 to /v1/instruments/{id}/...)",
    status_code=307,
    response_class=RedirectResponse,
    responses={307: {"description": "The same route of the symbol's instrument."},
               **errors(404, 422)},
)  # fmt: skip
async def by_symbol(
    request: Request, store: History, state: Live, symbol: SymbolPath, route: str
) -> RedirectResponse:
    instrument = await _instrument_of(store, state, symbol)
    target = f"/v1/instruments/{instrument}/{route}"
    if request.url.query:
        target += f"?{request.url.query}"
    return RedirectResponse(target, status_code=307)
