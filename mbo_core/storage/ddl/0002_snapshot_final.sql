-- Mark the snapshots that are a book's last state at the end of a replay (the processor publishes
-- them at an instrument's end-of-stream marker), so "the final books" is one WHERE clause.
ALTER TABLE book_snapshots ADD COLUMN IF NOT EXISTS final Bool DEFAULT false
    COMMENT 'true: the book''s last state at the end of the replay';
