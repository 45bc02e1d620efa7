-- A coarser level above the exception rules' hourly summary (0070): per meter, summarised quantity and
-- six-hour UTC block (block_end - 6 h, block_end], the same figures as the block's hours together
-- (count, sum, min / max, first and last reading, and every decrease between consecutive readings of
-- the block, those between two of its hours included). The window summary reads a block instead of
-- its six hours when no boundary of the pass falls inside it: a 24-hour window is then about ten rows
-- per series instead of 24.
--
-- Blocks are built from the hours by the fold (headend/store/reading_hours.py), in the same
-- transaction, for the blocks that have ended (block_end <= blocks_to) and lie wholly in the hours
-- kept (block_end - 6 h >= kept_from): a block is rebuilt whenever one of its hours is refolded (a late
-- reading, a re-qualified one), so it always equals its hours. The current block is never built: the
-- pass reads its hours.

CREATE TABLE reading_blocks (
    meter_id    integer NOT NULL,
    quantity_id smallint NOT NULL,
    block_end   timestamptz NOT NULL,
    n           integer NOT NULL,
    total       double precision NOT NULL,
    vmin        double precision NOT NULL,
    vmax        double precision NOT NULL,
    first_ts    timestamptz NOT NULL,
    first_value double precision NOT NULL,
    last_ts     timestamptz NOT NULL,
    last_value  double precision NOT NULL,
    drops_at    timestamptz[],        -- readings below the one before them in the block (NULL: none)
    drops_prev  double precision[],
    drops_value double precision[],
    PRIMARY KEY (meter_id, quantity_id, block_end)
);
CREATE INDEX reading_blocks_by_end ON reading_blocks (block_end);  -- the fold replaces and prunes blocks

-- Blocks ending at or before blocks_to (and wholly in the hours kept) exist.
ALTER TABLE reading_hours_kept ADD COLUMN blocks_to timestamptz NOT NULL DEFAULT '-infinity';

-- The hours' drop arrays joined into a block's, in the hours' order.
CREATE AGGREGATE reading_drops_cat(anycompatiblearray) (SFUNC = array_cat, STYPE = anycompatiblearray);

GRANT SELECT, INSERT, DELETE ON reading_blocks TO headend_daemon;
