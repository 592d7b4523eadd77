-- Which migrations ran in this database. ReplacingMergeTree keyed by version: two stages that
-- apply the same migration at once leave one row after a merge (read it with FINAL).
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32                  COMMENT 'NNNN of the file NNNN_name.sql',
    name       String                  COMMENT 'the file name',
    checksum   String                  COMMENT 'sha256 of the file as applied',
    applied_at DateTime64(3, 'UTC')    COMMENT 'when it was applied'
)
ENGINE = ReplacingMergeTree
ORDER BY version;
