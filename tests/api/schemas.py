"""Checking real answers against what the API publishes: the OpenAPI schema of each route and
status, the AsyncAPI schema of each live message, and the units convention (every ns time with
its exact ISO-8601 sibling, every price an exact decimal string)."""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from typing import Any

import yaml
from jsonschema.validators import Draft7Validator, Draft202012Validator

from api.params import parse_ts
from api.store import format_decimal
from mbo_core.prices import format_price, parse_price
from tests.paths import REPO

#: The ns fields of the API's JSON, each with an ISO-8601 sibling (mbo_core.timestamps.iso_name).
NS_FIELDS = {
    "ts_event": "ts_event_iso",
    "ts_recv": "ts_recv_iso",
    "last_update_ns": "last_update_iso",
    "started_ns": "started_iso",
    "t": "t_iso",
}
#: Fields holding prices: level prices (1e-9 multiples) and the bars' mid and spread.
PRICE_FIELDS = {"price", "open", "high", "low", "close", "spread"}


def validate_openapi(
    spec: dict[str, Any], path: str, method: str, status: int, body: Any, media: str
) -> None:
    """`body` is what the OpenAPI document says `method path` answers with `status`."""
    responses = spec["paths"][path][method]["responses"]
    assert str(status) in responses, (method, path, status, sorted(responses))
    content = responses[str(status)].get("content", {})
    assert media in content, (method, path, status, media, sorted(content))
    schema = content[media]["schema"]
    assert schema, f"{method} {path} {status}: an empty schema"
    # Refs are #/components/...: resolve them against a copy of the document's components.
    Draft202012Validator({**schema, "components": spec["components"]}).validate(body)


@cache
def asyncapi_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "docs" / "asyncapi.yaml").read_text())
    return document


def validate_live(message: dict[str, Any], channel: str = "live") -> None:
    """`message` is one of the messages docs/asyncapi.yaml lists for `channel`, by its type."""
    document = asyncapi_document()
    listed = document["channels"][channel]["messages"]
    assert message["type"] in listed, (channel, message["type"])
    ref = listed[message["type"]]["$ref"].removeprefix("#/components/messages/")
    payload = document["components"]["messages"][ref]["payload"]
    # AsyncAPI's default schema format is a superset of JSON Schema draft 7.
    Draft7Validator({**payload, "components": document["components"]}).validate(message)


def check_units(value: Any, where: str = "") -> int:
    """Every ns field beside its ISO sibling naming the same instant, every price exact decimal
    text; returns how many of both were checked (so a test can tell it checked something)."""
    checked = 0
    if isinstance(value, list):
        return sum(check_units(item, f"{where}[{i}]") for i, item in enumerate(value))
    if not isinstance(value, dict):
        return 0
    for name, item in value.items():
        if name in NS_FIELDS and not isinstance(item, dict):
            iso = value[NS_FIELDS[name]]
            assert (item is None) == (iso is None), (where, name)
            if item is not None:
                assert parse_ts(iso, name) == item, (where, name, item, iso)
                checked += 1
        elif name in PRICE_FIELDS and isinstance(item, str):
            # Canonical decimal text, exactly the number (no float went through it).
            assert format_decimal(Decimal(item)) == item, (where, name, item)
            if name == "price":
                assert format_price(parse_price(item)) == item, (where, item)
            checked += 1
        else:
            assert name not in PRICE_FIELDS or item is None or isinstance(item, dict), (
                where,
                name,
                item,
            )
            checked += check_units(item, f"{where}.{name}")
    return checked
