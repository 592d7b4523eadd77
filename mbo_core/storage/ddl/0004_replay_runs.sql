-- The run every row belongs to: the replay that sent its records (`replay-id` header) and the
-- copy of a looped replay (`replay-copy`, 1, 2, ...). Replays and loop copies send the same
-- market data again under new source positions; with these columns the history of one run is
-- one WHERE clause, and the API, the page and docs/storage.md's queries read the latest run of
-- an instrument unless asked for another. Rows stored before this migration have run ('', 0).
-- Not in the sort key: the source position already makes every row's key unique.
ALTER TABLE mbo_records
    ADD COLUMN IF NOT EXISTS replay_id LowCardinality(String) DEFAULT '' AFTER side,
    ADD COLUMN IF NOT EXISTS replay_copy UInt32 DEFAULT 0 CODEC(ZSTD(1)) AFTER replay_id;
ALTER TABLE bbo
    ADD COLUMN IF NOT EXISTS replay_id LowCardinality(String) DEFAULT '' AFTER sequence,
    ADD COLUMN IF NOT EXISTS replay_copy UInt32 DEFAULT 0 CODEC(ZSTD(1)) AFTER replay_id;
ALTER TABLE book_snapshots
    ADD COLUMN IF NOT EXISTS replay_id LowCardinality(String) DEFAULT '' AFTER sequence,
    ADD COLUMN IF NOT EXISTS replay_copy UInt32 DEFAULT 0 CODEC(ZSTD(1)) AFTER replay_id;
