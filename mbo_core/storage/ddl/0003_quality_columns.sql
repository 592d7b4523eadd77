-- The data-quality counters as one UInt64 column each instead of a Map per row: a Map costs the
-- engine ~3 us per inserted row (measured into chDB, docs/pipeline.md), plain columns nothing.
-- Existing rows keep their counters: the columns are added, filled from the Map (a mutation,
-- waited for), then the Map goes and `quality` comes back as an ALIAS with the same keys, so
-- every query written against the Map (quality['x'], maxMap(quality)) still works.
-- Idempotent: a second run finds the columns, its UPDATE reads the alias (x = x), and it drops
-- and re-adds the alias.
ALTER TABLE bbo
    ADD COLUMN IF NOT EXISTS cancel_unknown_order UInt64 CODEC(ZSTD(1)) AFTER locked,
    ADD COLUMN IF NOT EXISTS modify_unknown_order UInt64 CODEC(ZSTD(1)) AFTER cancel_unknown_order,
    ADD COLUMN IF NOT EXISTS cancel_exceeds_size UInt64 CODEC(ZSTD(1)) AFTER modify_unknown_order,
    ADD COLUMN IF NOT EXISTS maybe_bad_book UInt64 CODEC(ZSTD(1)) AFTER cancel_exceeds_size,
    ADD COLUMN IF NOT EXISTS add_existing_order UInt64 CODEC(ZSTD(1)) AFTER maybe_bad_book,
    ADD COLUMN IF NOT EXISTS modify_changed_side UInt64 CODEC(ZSTD(1)) AFTER add_existing_order,
    ADD COLUMN IF NOT EXISTS invalid_record UInt64 CODEC(ZSTD(1)) AFTER modify_changed_side,
    ADD COLUMN IF NOT EXISTS unterminated_event_records UInt64 CODEC(ZSTD(1)) AFTER invalid_record;
ALTER TABLE bbo UPDATE cancel_unknown_order = quality['cancel_unknown_order'], modify_unknown_order = quality['modify_unknown_order'], cancel_exceeds_size = quality['cancel_exceeds_size'], maybe_bad_book = quality['maybe_bad_book'], add_existing_order = quality['add_existing_order'], modify_changed_side = quality['modify_changed_side'], invalid_record = quality['invalid_record'], unterminated_event_records = quality['unterminated_event_records'] WHERE true SETTINGS mutations_sync = 2;
ALTER TABLE bbo DROP COLUMN IF EXISTS quality;
ALTER TABLE bbo ADD COLUMN IF NOT EXISTS quality Map(String, UInt64) ALIAS map(
        'cancel_unknown_order', cancel_unknown_order, 'modify_unknown_order', modify_unknown_order,
        'cancel_exceeds_size', cancel_exceeds_size, 'maybe_bad_book', maybe_bad_book,
        'add_existing_order', add_existing_order, 'modify_changed_side', modify_changed_side,
        'invalid_record', invalid_record, 'unterminated_event_records', unterminated_event_records)
    COMMENT 'the counter columns as one Map (mbo_core.quality.QUALITY_FIELDS)';

ALTER TABLE book_snapshots
    ADD COLUMN IF NOT EXISTS cancel_unknown_order UInt64 CODEC(ZSTD(1)) AFTER locked,
    ADD COLUMN IF NOT EXISTS modify_unknown_order UInt64 CODEC(ZSTD(1)) AFTER cancel_unknown_order,
    ADD COLUMN IF NOT EXISTS cancel_exceeds_size UInt64 CODEC(ZSTD(1)) AFTER modify_unknown_order,
    ADD COLUMN IF NOT EXISTS maybe_bad_book UInt64 CODEC(ZSTD(1)) AFTER cancel_exceeds_size,
    ADD COLUMN IF NOT EXISTS add_existing_order UInt64 CODEC(ZSTD(1)) AFTER maybe_bad_book,
    ADD COLUMN IF NOT EXISTS modify_changed_side UInt64 CODEC(ZSTD(1)) AFTER add_existing_order,
    ADD COLUMN IF NOT EXISTS invalid_record UInt64 CODEC(ZSTD(1)) AFTER modify_changed_side,
    ADD COLUMN IF NOT EXISTS unterminated_event_records UInt64 CODEC(ZSTD(1)) AFTER invalid_record;
ALTER TABLE book_snapshots UPDATE cancel_unknown_order = quality['cancel_unknown_order'], modify_unknown_order = quality['modify_unknown_order'], cancel_exceeds_size = quality['cancel_exceeds_size'], maybe_bad_book = quality['maybe_bad_book'], add_existing_order = quality['add_existing_order'], modify_changed_side = quality['modify_changed_side'], invalid_record = quality['invalid_record'], unterminated_event_records = quality['unterminated_event_records'] WHERE true SETTINGS mutations_sync = 2;
ALTER TABLE book_snapshots DROP COLUMN IF EXISTS quality;
ALTER TABLE book_snapshots ADD COLUMN IF NOT EXISTS quality Map(String, UInt64) ALIAS map(
        'cancel_unknown_order', cancel_unknown_order, 'modify_unknown_order', modify_unknown_order,
        'cancel_exceeds_size', cancel_exceeds_size, 'maybe_bad_book', maybe_bad_book,
        'add_existing_order', add_existing_order, 'modify_changed_side', modify_changed_side,
        'invalid_record', invalid_record, 'unterminated_event_records', unterminated_event_records)
    COMMENT 'the counter columns as one Map (mbo_core.quality.QUALITY_FIELDS)';
