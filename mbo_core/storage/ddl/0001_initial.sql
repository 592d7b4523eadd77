-- Initial schema: raw MBO records, top-of-book events and depth snapshots.
--
-- Conventions shared by the three tables:
-- * Prices are Int64 in 1e-9 units, exactly as in DBN (UNDEF_PRICE = 2^63-1 means "no price");
--   convert to decimal only at the edge (price_decimal below is such an edge).
-- * Timestamps are DateTime64(9, 'UTC'): nanoseconds since the epoch, as DBN has them.
-- * Every row carries its position in the source topic (source_partition, source_offset of the
--   Kafka message holding the records chunk, record_index inside the chunk). Outputs are
--   deterministic from that position, so a redelivered message produces the same key, and
--   ReplacingMergeTree collapses the duplicates: read with FINAL (or GROUP BY the key) when
--   exactness matters, since merges run in the background.
-- * PARTITION BY day of ts_event: a trading day is the unit of retention and of replay; the
--   duplicates of a row share its ts_event, hence its partition, which dedup requires. An insert
--   may span at most 100 days (max_partitions_per_insert_block).
-- * Codecs: Delta on columns that grow along the sort key (timestamps, sequence, prices), then
--   ZSTD(1) everywhere: cheap to write at the sink's rate, several times smaller than LZ4.

CREATE TABLE IF NOT EXISTS mbo_records
(
    ts_recv          DateTime64(9, 'UTC')    CODEC(Delta, ZSTD(1))  COMMENT 'capture-server receive time',
    ts_event         DateTime64(9, 'UTC')    CODEC(Delta, ZSTD(1))  COMMENT 'matching-engine time',
    ts_in_delta      Int32                   CODEC(ZSTD(1))         COMMENT 'ts_recv minus the venue send time (ns)',
    sequence         UInt32                  CODEC(Delta, ZSTD(1))  COMMENT 'venue message sequence number',
    publisher_id     UInt16                                         COMMENT 'Databento publisher (dataset + venue)',
    instrument_id    UInt32                                         COMMENT 'Databento instrument id',
    symbol           LowCardinality(String)                         COMMENT 'raw symbol, empty if unknown',
    order_id         UInt64                  CODEC(ZSTD(1))         COMMENT 'venue order id',
    price            Int64                   CODEC(Delta, ZSTD(1))  COMMENT '1e-9 units; 9223372036854775807 = undefined',
    price_decimal    Nullable(Decimal(38, 9)) ALIAS if(price = 9223372036854775807, NULL,
                         toDecimal128(price, 0) * toDecimal128('0.000000001', 9))
                                                                    COMMENT 'price as an exact decimal, NULL if undefined',
    size             UInt32                  CODEC(ZSTD(1))         COMMENT 'order quantity',
    flags            UInt8                   CODEC(ZSTD(1))         COMMENT 'F_LAST 128, F_TOB 64, F_SNAPSHOT 32, F_MBP 16, F_BAD_TS_RECV 8, F_MAYBE_BAD_BOOK 4',
    channel_id       UInt8                                          COMMENT 'venue channel',
    -- Enum8 keyed by the ASCII code, so a sink inserts the raw DBN byte unchanged.
    action           Enum8('A' = 65, 'C' = 67, 'F' = 70, 'M' = 77, 'N' = 78, 'R' = 82, 'T' = 84)
                                                                    COMMENT 'Add, Cancel, Fill, Modify, None, clear (R), Trade',
    side             Enum8('A' = 65, 'B' = 66, 'N' = 78)            COMMENT 'Ask, Bid, None',
    source_partition UInt16                                         COMMENT 'Kafka partition of the chunk',
    source_offset    UInt64                  CODEC(Delta, ZSTD(1))  COMMENT 'Kafka offset of the chunk',
    record_index     UInt32                  CODEC(ZSTD(1))         COMMENT 'index of the record inside the chunk'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(ts_event)
-- Queries filter by instrument and time; the source position at the end makes the key unique
-- per record, which is what ReplacingMergeTree deduplicates on.
ORDER BY (instrument_id, ts_event, source_partition, source_offset, record_index)
COMMENT 'Raw Databento MBO records as replayed through Kafka';

-- One row per top-of-book change, published at an F_LAST boundary.
CREATE TABLE IF NOT EXISTS bbo
(
    instrument_id    UInt32,
    publisher_id     UInt16                                         COMMENT '0 = consolidated across publishers (null in JSON)',
    symbol           LowCardinality(String),
    ts_event         DateTime64(9, 'UTC')    CODEC(Delta, ZSTD(1))  COMMENT 'ts_event of the event that closed the book',
    ts_recv          DateTime64(9, 'UTC')    CODEC(Delta, ZSTD(1)),
    sequence         Nullable(UInt32)                               COMMENT 'venue sequence of the closing record; NULL if none',
    source_partition UInt16                                         COMMENT 'Kafka partition of the records chunk',
    source_offset    UInt64                  CODEC(Delta, ZSTD(1))  COMMENT 'Kafka offset of the records chunk',
    record_index     UInt32                                         COMMENT 'index of the F_LAST record in the chunk',
    bid_price        Nullable(Int64)         CODEC(ZSTD(1))         COMMENT '1e-9 units; NULL: no bid',
    bid_size         UInt64                  CODEC(ZSTD(1))         COMMENT 'total size at the best bid',
    bid_count        UInt32                  CODEC(ZSTD(1))         COMMENT 'orders at the best bid',
    ask_price        Nullable(Int64)         CODEC(ZSTD(1))         COMMENT '1e-9 units; NULL: no ask',
    ask_size         UInt64                  CODEC(ZSTD(1)),
    ask_count        UInt32                  CODEC(ZSTD(1)),
    crossed          Bool                                           COMMENT 'best bid > best ask',
    locked           Bool                                           COMMENT 'best bid = best ask',
    quality          Map(LowCardinality(String), UInt64)            COMMENT 'data-quality counters so far (mbo_core.book.QUALITY_FIELDS)'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(ts_event)
ORDER BY (instrument_id, publisher_id, ts_event, source_partition, source_offset, record_index)
COMMENT 'Top-of-book events';

-- Depth-N snapshots: levels as parallel arrays, best first (bids descending, asks ascending).
CREATE TABLE IF NOT EXISTS book_snapshots
(
    instrument_id    UInt32,
    publisher_id     UInt16                                         COMMENT '0 = consolidated across publishers (null in JSON)',
    symbol           LowCardinality(String),
    ts_event         DateTime64(9, 'UTC')    CODEC(Delta, ZSTD(1)),
    ts_recv          DateTime64(9, 'UTC')    CODEC(Delta, ZSTD(1)),
    sequence         Nullable(UInt32),
    source_partition UInt16,
    source_offset    UInt64                  CODEC(Delta, ZSTD(1)),
    record_index     UInt32,
    depth            UInt16                                         COMMENT 'levels requested per side (a side may have fewer)',
    bid_prices       Array(Int64)            CODEC(ZSTD(1))         COMMENT '1e-9 units, best first',
    bid_sizes        Array(UInt64)           CODEC(ZSTD(1)),
    bid_counts       Array(UInt32)           CODEC(ZSTD(1)),
    ask_prices       Array(Int64)            CODEC(ZSTD(1))         COMMENT '1e-9 units, best first',
    ask_sizes        Array(UInt64)           CODEC(ZSTD(1)),
    ask_counts       Array(UInt32)           CODEC(ZSTD(1)),
    crossed          Bool,
    locked           Bool,
    quality          Map(LowCardinality(String), UInt64)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(ts_event)
ORDER BY (instrument_id, publisher_id, ts_event, source_partition, source_offset, record_index)
COMMENT 'Depth-N book snapshots';
