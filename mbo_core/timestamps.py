"""Timestamps at the edge: integer nanoseconds since the UNIX epoch inside, and in JSON also as
ISO-8601 UTC with nine fraction digits and `Z` (`2025-09-24T19:30:00.000860311Z`), exact.

One formatter for every place that shows a time: the API's JSON (a `<name>_iso` field beside
each ns field, `with_iso`) and `mbo sql`'s DateTime64 columns.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

NS_PER_S = 1_000_000_000


@lru_cache(maxsize=1 << 12)  # a page of rows spans few distinct seconds
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def iso_ns(ns: int) -> str:
    """Nanoseconds since the epoch as ISO-8601 UTC with nine fraction digits: exact.
    1758742200000860311 -> "2025-09-24T19:30:00.000860311Z"."""
    seconds, fraction = divmod(ns, NS_PER_S)
    return f"{_second(seconds)}.{fraction:09d}Z"


def iso_name(field: str) -> str:
    """The ISO sibling of an ns field: `ts_event` -> `ts_event_iso`, `started_ns` ->
    `started_iso`."""
    return field.removesuffix("_ns") + "_iso"


def with_iso(obj: dict[str, Any], *fields: str) -> dict[str, Any]:
    """`obj` with the ISO sibling (iso_name) of each of `fields` right after it; None stays
    None. A new dict: `obj` is not changed."""
    out: dict[str, Any] = {}
    for name, value in obj.items():
        out[name] = value
        if name in fields:
            out[iso_name(name)] = None if value is None else iso_ns(value)
    return out
