"""The API's answers as pydantic models: every route's body (the OpenAPI schema at
/openapi.json) and every live-feed message (docs/asyncapi.yaml, made by `asyncapi()`).

Units, one convention everywhere: prices are exact decimal strings in price units (`"64.81"`,
never floats, never 1e-9 integers); every time is an integer of nanoseconds since the UNIX epoch
with an ISO-8601 UTC sibling of nine fraction digits and `Z` named `<name>_iso` (`ts_event` ->
`ts_event_iso`, `started_ns` -> `started_iso`, mbo_core.timestamps). Objects never carry fields
these models do not name (`additionalProperties: false`): tests/api validate real answers and
messages against the published schemas.

The routes document their bodies with these models but do not validate against them per request:
the hot ones serve JSON encoded once per book version (api.state, api.fastpath), and a route that
returns a Response skips FastAPI's response validation.

`python -m api.models > docs/asyncapi.yaml` regenerates the AsyncAPI document (a test checks
that the committed file is what this module makes).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from api.params import MAX_DEPTH
from mbo_core.quality import QUALITY_FIELDS

PRICE_PATTERN = r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$"
ISO_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z$"

Price = Annotated[
    str,
    Field(
        pattern=PRICE_PATTERN,
        description="Exact decimal in price units, as text (no float rounding, no trailing zeros).",
        examples=["64.81"],
    ),
]
Ns = Annotated[int, Field(ge=0, description="Nanoseconds since the UNIX epoch (UTC).")]
Iso = Annotated[
    str,
    Field(
        pattern=ISO_PATTERN,
        description="The instant of its ns sibling (`ts_event_iso`: `ts_event`, `started_iso`: "
        "`started_ns`) as ISO-8601 UTC with nine fraction digits: exact.",
        examples=["2025-09-24T19:30:00.000860311Z"],
    ),
]
PublisherId = Annotated[
    int | None, Field(description="Publisher id; null: the consolidated book of all publishers.")
]
Quality = Annotated[
    dict[str, int],
    Field(
        description="Data-quality counters of the book (they only grow): "
        + ", ".join(QUALITY_FIELDS)
        + ". Empty when nothing is known yet."
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Level(_Model):
    """One price level (or one side of the BBO)."""

    price: Price
    size: int = Field(ge=0, description="Total size resting at the price.")
    count: int = Field(ge=0, description="Orders at the price.")


class Run(_Model):
    """One run of an instrument's data: a replay, or one copy of a looped replay; history is
    read one run at a time, the latest by default (docs/storage.md, "Runs")."""

    replay_id: str = Field(description="The replay's id; empty for data sent without one.")
    replay_copy: int = Field(ge=0, description="The copy of a looped replay, 1 first (0: none).")


class RunSummary(Run):
    """A run and what the BBO history holds of it."""

    first_ts_event: Ns
    first_ts_event_iso: Iso
    last_ts_event: Ns
    last_ts_event_iso: Iso
    bbo_rows: int = Field(ge=0, description="BBO changes stored (duplicates collapsed).")
    latest: bool = Field(description="The run history routes read when none is named.")


class Runs(_Model):
    """The runs an instrument's history holds, newest first."""

    instrument_id: int
    runs: list[RunSummary]


class SymbolMapping(_Model):
    """One symbol-instrument pair and the event-time interval it was seen over."""

    symbol: str
    instrument_id: int
    valid_from: Ns
    valid_from_iso: Iso
    valid_to: Ns
    valid_to_iso: Iso
    records: int = Field(ge=0, description="MBO records stored with it.")


class Symbology(_Model):
    """Every mapping ClickHouse holds, by symbol, newest first."""

    mappings: list[SymbolMapping]


class SymbolMappings(_Model):
    """What a symbol names: its current instrument (the one /v1/symbols/{symbol}/... routes
    redirect to) and its mappings, newest first (empty when only the live view knows it)."""

    symbol: str
    instrument_id: int
    mappings: list[SymbolMapping]


class Book(_Model):
    """A book: the levels of both sides, best first (the book JSON of mbo_core/schemas.py with
    the ISO siblings of its times)."""

    instrument_id: int
    publisher_id: PublisherId
    symbol: str | None
    ts_event: Ns
    ts_event_iso: Iso
    ts_recv: Ns
    ts_recv_iso: Iso
    sequence: int | None = Field(description="The venue's sequence number; null: consolidated.")
    bids: list[Level] = Field(description="Best (highest) first.")
    asks: list[Level] = Field(description="Best (lowest) first.")
    crossed: bool = Field(description="Best bid above best ask.")
    locked: bool = Field(description="Best bid equal to best ask.")
    quality: Quality
    run: Run | None = Field(
        default=None, description="History only (book/at): the run the book is of."
    )


class Bbo(_Model):
    """The best bid and offer after one BBO change."""

    instrument_id: int
    publisher_id: PublisherId
    symbol: str | None
    ts_event: Ns
    ts_event_iso: Iso
    ts_recv: Ns
    ts_recv_iso: Iso
    bid: Level | None = Field(description="null: no bid.")
    ask: Level | None = Field(description="null: no offer.")
    crossed: bool
    locked: bool


class Instrument(_Model):
    """An instrument seen on the live topics, shown by its default book."""

    instrument_id: int
    symbol: str | None
    publishers: list[int]
    last_update_ns: Ns = Field(description="Newest ts_event seen (ns since the epoch).")
    last_update_iso: Iso
    crossed: bool
    locked: bool
    quality: Quality


class _Page(_Model):
    run: Run | None = Field(description="The run read; null: the instrument has no history.")
    truncated: bool = Field(description="More follow: fetch `next`.")
    next: str | None = Field(description="URL of the next page; null on the last page.")


class BboRows(_Page):
    """A page of BBO changes, oldest first (without `bucket`)."""

    rows: list[Bbo]


class Bar(_Model):
    """One bar: OHLC of the mid over the bar's two-sided BBO changes, and the last spread."""

    t: Ns = Field(description="The bar's start (ns since the epoch), a multiple of its width.")
    t_iso: Iso
    open: Price
    high: Price
    low: Price
    close: Price
    spread: Price = Field(description="Ask minus bid at the bar's last change (negative: crossed).")
    changes: int = Field(ge=1, description="Two-sided BBO changes in the bar.")


class Bars(_Page):
    """A page of bars, oldest first (with `bucket`); bars without a change are absent."""

    bars: list[Bar]


ReplayState = Literal["idle", "running", "paused", "finished", "stopped", "failed"]


class ReplayStatus(_Model):
    """This API's replay (its last one once over), and any other process's replay."""

    state: ReplayState
    file: str | None = Field(description="The file, relative to the replay directory.")
    rate: float | None = Field(description="Records per second asked for.")
    speed: float | None = Field(description="x recorded time asked for.")
    loop: int | None = Field(description="Copies of the file replayed.")
    records_sent: int = Field(ge=0)
    records_total: int | None = Field(description="null: the file does not say.")
    progress: float | None = Field(ge=0, le=1, description="records_sent / records_total.")
    started_ns: Ns | None
    started_iso: Iso | None
    error: str | None = Field(description="Why the replay failed.")
    other_replay: str | None = Field(
        description="A replay another process runs into the records topic (`mbo run`'s own, an "
        "`mbo produce`), from its replay lock; null: none, or this API's replay is active."
    )


class ReplayFiles(_Model):
    directory: str | None = Field(description="MBO_API__REPLAY_DIR; null: replay control is off.")
    files: list[str] = Field(description="Replayable .dbn and .dbn.zst files, relative names.")


class Health(_Model):
    status: Literal["ok"]


class Ready(_Model):
    status: Literal["ready"]
    live_caught_up: bool = Field(description="The live view has read the topics' ends at start.")


class NotReady(_Model):
    """503 of /readyz: what is down."""

    status: Literal["unavailable"]
    unavailable: list[Literal["clickhouse", "kafka", "sink"]]
    errors: dict[str, str] = Field(description="Per backend down, why.")


class SqlColumn(_Model):
    name: str
    type: str = Field(description="The ClickHouse type, e.g. DateTime64(9, 'UTC').")


class SqlResult(_Model):
    """POST /v1/sql: the columns and the rows of a read-only query."""

    columns: list[SqlColumn]
    rows: list[list[Any]] = Field(
        description="One list of values per row, in column order: DateTime64 as ISO-8601 UTC "
        "with nine fraction digits, DateTime with `Z`; other values as ClickHouse gives them."
    )


# ---------------------------------------------------------------------------- live messages


class LiveSnapshot(_Model):
    """The first message of a live feed: the state when it subscribed."""

    type: Literal["snapshot"]
    book: Book | None = Field(description="The latest book; null before the first snapshot.")
    bbo: Bbo | None = Field(description="The latest BBO; null before the first BBO change.")


class LiveUpdate(_Model):
    """The state after a change of the book or the BBO (conflated: at most max_hz a second)."""

    type: Literal["update"]
    book: Book | None
    bbo: Bbo | None


#: WebSocket close code of each error status (4000 + status), sent after its error message.
WS_CLOSE_CODES = {401: 4401, 404: 4404, 422: 4422}
#: The `detail` of the WebSocket's errors that are always the same text.
WS_TOKEN = "missing or wrong bearer token"
WS_NOT_NUMBERS = "instrument_id, depth and publisher_id must be integers and max_hz a number"
WS_OUT_OF_RANGE = f"max_hz must be in (0, 1000] and depth in [1, {MAX_DEPTH}]"


class LiveError(_Model):
    """A WebSocket error: sent once, then the server closes with 4000 + status."""

    type: Literal["error"]
    status: Literal[401, 404, 422] = Field(
        description="401: missing or wrong token; 404: unknown instrument or publisher; 422: a "
        "parameter that is not a number or out of range."
    )
    detail: str = Field(description="What is wrong.")


def _schemas() -> dict[str, Any]:
    """JSON Schemas of the live messages, `$ref`s pointing into AsyncAPI's components."""
    _, top = models_json_schema(
        [(m, "serialization") for m in (LiveSnapshot, LiveUpdate, LiveError)],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = top["$defs"]
    return schemas


_QUERY = {
    "type": "object",
    "properties": {
        "max_hz": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000, "default": 10,
                   "description": "Most updates per second (capped by MBO_API__WS_MAX_HZ)."},
        "depth": {"type": "integer", "minimum": 1, "maximum": MAX_DEPTH, "default": 10,
                  "description": "Levels per side."},
        "publisher_id": {"type": "integer", "minimum": 0, "maximum": 65535,
                         "description": "Publisher id; omitted: the consolidated book if the "
                         "instrument has several publishers, else its only one."},
        "token": {"type": "string", "description": "The bearer token when MBO_API__TOKEN is "
                  "set (browsers cannot send an Authorization header here)."},
    },
}  # fmt: skip

_LIVE_DESCRIPTION = f"""\
One book's live state: a `snapshot` message on subscribe, then an `update` whenever the book or
its BBO changed, at most `max_hz` a second (conflated: a slow client gets the newest state, never
a queue). Every message is the whole state (`book` at `depth` levels and `bbo`), not a diff.
Prices are exact decimal strings; every ns time has an ISO-8601 sibling (`ts_event_iso`).

**WebSocket** (`/v1/instruments/{{instrument_id}}/live`): each message is one text frame of JSON.
Errors: one `error` message, then the server closes the socket with 4000 + its status:

| close code | status | detail |
| --- | --- | --- |
| 4401 | 401 | "{WS_TOKEN}" (MBO_API__TOKEN is set: send `?token=` or `Authorization: Bearer`) |
| 4404 | 404 | "unknown instrument 1", "instrument 432669 has no publisher 7" |
| 4422 | 422 | "{WS_NOT_NUMBERS}", "{WS_OUT_OF_RANGE}" |

The handshake itself is refused with an HTTP answer and the API's error body (`{{"detail"}}`) for
an unknown Host header (400) and a foreign Origin (403). There are no heartbeat messages: the
server sends WebSocket pings every 20 s and closes with 1011 when no pong came within 20 s, and
with 1012 when it shuts down. Client messages are read and ignored.

**Server-Sent Events** (`GET /v1/instruments/{{instrument_id}}/events`, same parameters): the
same snapshot and update messages, each as `event: snapshot|update` and `data: <the JSON
message>`; no comments, ids or heartbeats. Its errors are HTTP answers before the stream starts
(400, 401, 404, 422, with the error bodies of /openapi.json).
"""

_LEVEL = {"price": "64.81", "size": 12, "count": 3}
_EXAMPLE_BOOK = {
    "instrument_id": 432669, "publisher_id": 1, "symbol": "CLX5",
    "ts_event": 1758745799999845251, "ts_event_iso": "2025-09-24T20:29:59.999845251Z",
    "ts_recv": 1758745800000033771, "ts_recv_iso": "2025-09-24T20:30:00.000033771Z",
    "sequence": 1000, "bids": [_LEVEL], "asks": [{**_LEVEL, "price": "64.82", "count": 1}],
    "crossed": False, "locked": False, "quality": dict.fromkeys(QUALITY_FIELDS, 0),
}  # fmt: skip
_EXAMPLE_BBO = {
    **{k: v for k, v in _EXAMPLE_BOOK.items() if k not in ("sequence", "bids", "asks", "quality")},
    "bid": _LEVEL, "ask": {**_LEVEL, "price": "64.82", "count": 1},
}  # fmt: skip
_EXAMPLE_BBO = {k: _EXAMPLE_BBO[k] for k in Bbo.model_fields}


def _error(status: int, detail: str) -> dict[str, Any]:
    return {"type": "error", "status": status, "detail": detail}


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the live feeds (docs/asyncapi.yaml)."""
    state = {"book": _EXAMPLE_BOOK, "bbo": _EXAMPLE_BBO}
    # After a change: 2 lots fewer at the best bid.
    smaller = {**_LEVEL, "size": 10}
    later = {"book": {**_EXAMPLE_BOOK, "bids": [smaller]}, "bbo": {**_EXAMPLE_BBO, "bid": smaller}}

    def message(model: type[BaseModel], *examples: tuple[str, Any]) -> dict[str, Any]:
        name = model.__name__.removeprefix("Live").lower()
        return {
            "name": name,
            "title": name.capitalize(),
            "summary": model.__doc__,
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
            "examples": [{"name": n, "payload": payload} for n, payload in examples],
        }

    messages = {
        "snapshot": message(LiveSnapshot, ("snapshot", {"type": "snapshot", **state})),
        "update": message(LiveUpdate, ("update", {"type": "update", **later})),
        "error": {
            **message(
                LiveError,
                ("token", _error(401, WS_TOKEN)),
                ("unknown-instrument", _error(404, "unknown instrument 1")),
                ("unknown-publisher", _error(404, "instrument 432669 has no publisher 7")),
                ("not-a-number", _error(422, WS_NOT_NUMBERS)),
                ("out-of-range", _error(422, WS_OUT_OF_RANGE)),
            ),
            "x-close-codes": {
                code: f"after an error of status {status}"
                for status, code in WS_CLOSE_CODES.items()
            },
        },
    }

    def channel_messages(*names: str) -> dict[str, Any]:
        return {name: {"$ref": f"#/components/messages/{name}"} for name in names}

    def operation_messages(channel: str, *names: str) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in names]

    def parameters() -> dict[str, Any]:
        return {"instrument_id": {"description": "The instrument id (0 to 4294967295)."}}

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "mbo-pipeline API live feeds",
            "version": "1",
            "description": _LIVE_DESCRIPTION,
        },
        "defaultContentType": "application/json",
        "servers": {
            "websocket": {
                "host": "127.0.0.1:8000",
                "protocol": "ws",
                "description": "`mbo api` (MBO_API__HOST, MBO_API__PORT).",
            },
            "sse": {
                "host": "127.0.0.1:8000",
                "protocol": "http",
                "description": "The same API: Server-Sent Events over HTTP.",
            },
        },
        "channels": {
            "live": {
                "address": "/v1/instruments/{instrument_id}/live",
                "title": "WebSocket live feed",
                "servers": [{"$ref": "#/servers/websocket"}],
                "parameters": parameters(),
                "messages": channel_messages("snapshot", "update", "error"),
                "bindings": {"ws": {"method": "GET", "query": _QUERY, "bindingVersion": "0.1.0"}},
            },
            "events": {
                "address": "/v1/instruments/{instrument_id}/events",
                "title": "Server-Sent Events live feed",
                "servers": [{"$ref": "#/servers/sse"}],
                "parameters": parameters(),
                "messages": channel_messages("snapshot", "update"),
            },
        },
        "operations": {
            "receiveLive": {
                "action": "receive",
                "channel": {"$ref": "#/channels/live"},
                "messages": operation_messages("live", "snapshot", "update", "error"),
            },
            "receiveEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/events"},
                "messages": operation_messages("events", "snapshot", "update"),
            },
        },
        "components": {"messages": messages, "schemas": _schemas()},
    }


def asyncapi_yaml() -> str:
    """docs/asyncapi.yaml's text: multi-line text as YAML block scalars, no anchors."""
    import yaml  # noqa: PLC0415 (only to write the document)

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    header = "# Generated by `python -m api.models > docs/asyncapi.yaml`: do not edit.\n"
    body = yaml.dump(asyncapi(), Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True)
    return header + body


if __name__ == "__main__":
    sys.stdout.write(asyncapi_yaml())
