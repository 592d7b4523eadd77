"""Kafka message keys and header names shared by every topic (values are ASCII unless noted)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Headers = Sequence[tuple[str, bytes]]

H_SCHEMA = "mbo-schema"  # the value's layout: dbn.mbo, dbn.mbp-1, dbn.mbp-10
H_DBN_VERSION = "dbn-version"
H_DATASET = "dataset"
H_SYMBOL = "symbol"
H_SENT_NS = "sent-ns"  # producer wall clock at send of the records message, ns since the epoch
H_RECORDS = "records"
H_END_OF_STREAM = "end-of-stream"
H_UNTERMINATED_TAIL = "unterminated-tail"
H_PROCESSED_NS = "processed-ns"  # processor wall clock at publish
H_REPLAY_ID = "replay-id"  # the replay that sent a records message (a resumed replay keeps it)
#: Which copy of a looped replay (1, 2, ...): a (replay-id, replay-copy) pair is one run of the
#: data, whose books start empty and whose history rows are told apart from other runs'.
H_REPLAY_COPY = "replay-copy"
#: Records of the message's instrument this replay has sent, this message's included: where a
#: resumed replay goes on from (producer/resume.py).
H_INSTRUMENT_RECORDS = "instrument-records"
H_INSTRUMENT_ID = "instrument-id"
H_SOURCE_PARTITION = "source-partition"
H_SOURCE_OFFSET = "source-offset"
H_DEPTH = "depth"
H_EXT_SCHEMA = "ext-schema"
H_EXT = "ext"  # binary: one mbo_core.wire.layouts.EXT_DTYPE row per value record

DBN_VERSION = 3
#: DBN versions whose MBO, MBP-1 and MBP-10 layouts are the ones this project reads.
DBN_VERSIONS_READ = (b"1", b"2", b"3")


class MalformedMessage(ValueError):  # noqa: N818 (a message, not an error of ours)
    """A message that does not follow its topic's format: consumers dead-letter it, never act
    on it (docs/faults.md). `reason` is a short fixed label (metrics, dead-letter header); the
    text says what exactly is wrong."""

    REASONS = ("schema", "version", "length", "header", "rtype", "action", "side", "key", "count")

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in self.REASONS, reason
        super().__init__(detail)
        self.reason = reason


def instrument_key(instrument_id: int) -> bytes:
    """Every message's key: the instrument id in ASCII decimal (one instrument, one partition)."""
    return str(instrument_id).encode()


def header_map(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, bytes]:
    return dict(headers or ())


def key_instrument(key: bytes | None) -> int | None:
    """The instrument id a message key names; None for no key; MalformedMessage for a key that
    is not an instrument id (ASCII decimal, below 2^32)."""
    if key is None:
        return None
    if not key.isdigit() or len(key) > 10 or int(key) >= 1 << 32:
        raise MalformedMessage("key", f"key {key[:40]!r} is not an instrument id")
    return int(key)


def header_int(headers: dict[str, bytes], name: str) -> int:
    """An ASCII integer header; MalformedMessage naming the header if missing or not one."""
    value = headers.get(name)
    if value is None or not value.lstrip(b"-").isdigit():
        raise MalformedMessage("header", f"header {name} missing or not an integer: {value!r}")
    return int(value)


def check_dbn_version(headers: dict[str, bytes]) -> None:
    """MalformedMessage if the message declares a DBN version whose layouts differ from
    v1-v3's."""
    version = headers.get(H_DBN_VERSION)
    if version is not None and version not in DBN_VERSIONS_READ:
        raise MalformedMessage(
            "version", f"{H_DBN_VERSION} {version!r}: this reader knows DBN versions 1-3"
        )


def header_int_in(headers: dict[str, bytes], name: str, low: int, high: int) -> int:
    """header_int within [low, high); MalformedMessage naming the header otherwise."""
    value = header_int(headers, name)
    if not low <= value < high:
        raise MalformedMessage("header", f"header {name}={value} outside [{low}, {high})")
    return value
