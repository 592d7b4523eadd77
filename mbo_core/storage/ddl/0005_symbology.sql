-- Symbology: which instrument id carried which symbol, and when (event time), per dataset
-- where known. Filled by ClickHouse itself from every insert into mbo_records (a materialized
-- view: no work in the sink), so it holds exactly the mappings of the data stored. Read it
-- merged: SELECT symbol, instrument_id, min(valid_from), max(valid_to) FROM symbology
-- GROUP BY symbol, instrument_id (the API's /v1/symbology does).
CREATE TABLE IF NOT EXISTS symbology
(
    symbol        LowCardinality(String)                                COMMENT 'raw symbol',
    instrument_id UInt32,
    valid_from    SimpleAggregateFunction(min, DateTime64(9, 'UTC'))    COMMENT 'first ts_event seen with this mapping',
    valid_to      SimpleAggregateFunction(max, DateTime64(9, 'UTC'))    COMMENT 'last ts_event seen with this mapping',
    records       SimpleAggregateFunction(sum, UInt64)                  COMMENT 'records inserted (copies included until merged away in mbo_records)'
)
ENGINE = AggregatingMergeTree
ORDER BY (symbol, instrument_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS symbology_from_records TO symbology AS
SELECT symbol, instrument_id, min(ts_event) AS valid_from, max(ts_event) AS valid_to,
       count() AS records
FROM mbo_records
WHERE symbol != ''
GROUP BY symbol, instrument_id;
