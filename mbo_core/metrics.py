"""Every Prometheus metric of the pipeline, declared once. Stages import what they record.

Names are part of the deploy contract (Grafana dashboards and alerts query them): add, do not
rename. Each stage process serves them on its own /metrics endpoint (`serve_metrics`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Latency buckets from 50 us to 10 s: end-to-end latency targets sit around 1-10 ms.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
SIZE_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)

RECORDS_IN = Counter(
    "mbo_records_in_total", "MBO records a stage has read (file or topic).", ["stage"]
)
RECORDS_OUT = Counter(
    "mbo_records_out_total", "MBO records a stage has written to Kafka.", ["stage"]
)
MESSAGES_IN = Counter("mbo_messages_in_total", "Kafka messages consumed.", ["stage", "topic"])
MESSAGES_OUT = Counter("mbo_messages_out_total", "Kafka messages produced.", ["stage", "topic"])
EVENTS_OUT = Counter(
    "mbo_events_out_total", "BBO changes and snapshots emitted.", ["stage", "kind"]
)
BATCH_RECORDS = Histogram(
    "mbo_batch_records", "Records per Kafka message or insert batch.", ["stage"],
    buckets=SIZE_BUCKETS,
)  # fmt: skip
CONSUMER_LAG = Gauge(
    "mbo_consumer_lag_messages", "Messages between a consumer's position and the partition end.",
    ["stage", "topic", "partition"],
)  # fmt: skip
BOOK_APPLY_SECONDS = Histogram(
    "mbo_book_apply_seconds", "Time to apply one records message to the books.",
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
END_TO_END_SECONDS = Histogram(
    "mbo_end_to_end_latency_seconds",
    "From the producer's send of a records message to its effect: a BBO/snapshot event "
    "(stage=processor) or rows committed in ClickHouse (stage=sink).",
    ["stage", "kind"],
    buckets=LATENCY_BUCKETS,
)
INSERT_SECONDS = Histogram(
    "mbo_clickhouse_insert_seconds", "Time of one ClickHouse insert.", ["table"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
ROWS_INSERTED = Counter("mbo_clickhouse_rows_total", "Rows inserted into ClickHouse.", ["table"])
DATA_QUALITY = Gauge(
    "mbo_data_quality_events",
    "Data-quality counters of the books (mbo_core.book.QUALITY_FIELDS), per instrument.",
    ["instrument_id", "counter"],
)
PRODUCER_RATE = Gauge("mbo_producer_target_rate", "Records/s the producer paces to (0: max).")
REBUILD_RECORDS = Counter(
    "mbo_processor_rebuild_records_total",
    "Records re-read from the records topic to rebuild books after a partition assignment.",
)
CHECKPOINTS = Counter(
    "mbo_processor_checkpoints_total",
    "Checkpoints of a partition's books: written, restored (a rebuild resumed from one) or "
    "rejected (unusable, or its records message is not in the topic any more).",
    ["outcome"],
)
API_REQUEST_SECONDS = Histogram(
    "mbo_api_request_seconds", "API request latency.", ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)  # fmt: skip
API_WEBSOCKET_CLIENTS = Gauge(
    "mbo_api_websocket_clients", "Connected live-feed clients (WebSocket and SSE).", ["kind"]
)
API_LIVE_MESSAGES = Counter(
    "mbo_api_live_messages_total", "Live-feed messages sent to clients.", ["kind"]
)
MESSAGES_REJECTED = Counter(
    "mbo_messages_rejected_total",
    "Malformed Kafka messages refused (dead-lettered by the processor and sink, skipped by the "
    "API's live view), by reason (mbo_core.wire.MalformedMessage.REASONS).",
    ["stage", "topic", "reason"],
)
KAFKA_REACHABLE = Gauge(
    "mbo_kafka_reachable",
    "1 while a bootstrap server answers Kafka's ApiVersions (asked every few seconds by the "
    "stage's watch, mbo_core.kafka.probes.watch_kafka), 0 while none does: the stage's "
    "readiness as far as Kafka goes.",
    ["stage"],
)
LIVE_GAPS = Counter(
    "mbo_live_gaps_total",
    "Databento Live connections that ended without being asked to (dropped, closed by the "
    "gateway, timed out, records skipped): each is a gap in the stream, and the next connection "
    "is a new run whose books start from its snapshot (mbo_core.databento.live), by reason.",
    ["reason"],
)

ALL_METRIC_NAMES = (
    "mbo_records_in_total",
    "mbo_records_out_total",
    "mbo_messages_in_total",
    "mbo_messages_out_total",
    "mbo_events_out_total",
    "mbo_batch_records",
    "mbo_consumer_lag_messages",
    "mbo_book_apply_seconds",
    "mbo_end_to_end_latency_seconds",
    "mbo_clickhouse_insert_seconds",
    "mbo_clickhouse_rows_total",
    "mbo_data_quality_events",
    "mbo_producer_target_rate",
    "mbo_processor_rebuild_records_total",
    "mbo_api_request_seconds",
    "mbo_api_websocket_clients",
    "mbo_api_live_messages_total",
    "mbo_messages_rejected_total",
    "mbo_kafka_reachable",
    "mbo_live_gaps_total",
)


def serve_metrics(host: str, port: int) -> int:
    """Serve /metrics on host:port in a background thread; port 0 serves nothing. Returns port."""
    if port == 0:
        return 0
    start_http_server(port, addr=host)
    return port
