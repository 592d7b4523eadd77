"""The Kafka wire: one encoder and one decoder per topic, used by every stage, test and bench.

Every value is fixed-width little-endian records any consumer reads with a standard library:

* records (`mbo.records`, mbo_core/wire/records.py): raw DBN MBO records (56 bytes);
* bbo (`mbo.bbo`, mbo_core/wire/bbo.py): DBN MBP-1 records (80 bytes), one per best-level change;
* snapshots (`mbo.snapshots`, mbo_core/wire/snapshots.py): DBN MBP-10 records (368 bytes), one
  per depth snapshot.

So `databento_dbn.DBNDecoder(has_metadata=False)` and databento-python read our topics as they
read Databento's data. What DBN's records have no field for (the source position, crossed and
locked, the data-quality counters, consolidated and final marks) travels in headers: context per
message and a 72-byte `ext` row per record (mbo_core/wire/envelope.py, layouts.py). Prices are
int64 in 1e-9 units on the wire, UNDEF_PRICE (2^63-1) for none. Every message is keyed by the
instrument id in ASCII (`instrument_key`), so one instrument stays in one partition, in order.

A message that breaks its format raises `MalformedMessage` (with a short `reason`) when decoded,
before anyone acts on it: consumers dead-letter it whole (docs/faults.md).

Versions: `dbn-version: 3` for the DBN layouts, `ext-schema: mbo.ext/1` for the ext rows and the
event headers; a reader refuses a version it does not know.
"""

from mbo_core.wire.bbo import BBO_SCHEMA, bbo_json, decode_bbo, encode_bbo
from mbo_core.wire.envelope import (
    Encoded,
    EventContext,
    EventMessage,
    message_bytes,
    split_events,
)
from mbo_core.wire.headers import H_PROCESSED_NS, MalformedMessage, instrument_key, key_instrument
from mbo_core.wire.records import (
    RECORDS_SCHEMA,
    RecordsMessage,
    decode_records,
    end_of_stream_headers,
    records_headers,
)
from mbo_core.wire.snapshots import SNAPSHOTS_SCHEMA, book_json, decode_snapshots, encode_snapshots

__all__ = [
    "BBO_SCHEMA",
    "H_PROCESSED_NS",
    "RECORDS_SCHEMA",
    "SNAPSHOTS_SCHEMA",
    "Encoded",
    "EventContext",
    "EventMessage",
    "MalformedMessage",
    "RecordsMessage",
    "bbo_json",
    "book_json",
    "decode_bbo",
    "decode_records",
    "decode_snapshots",
    "encode_bbo",
    "encode_snapshots",
    "end_of_stream_headers",
    "instrument_key",
    "key_instrument",
    "message_bytes",
    "records_headers",
    "split_events",
]
