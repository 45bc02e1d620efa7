-- The exception rules' hourly summary of the readings they look at, kept up to date incrementally
-- (headend/store/reading_hours.py): per meter, quantity and UTC hour (hour_end - 1 h, hour_end], over
-- the usable readings (actual, backfilled, freeze) of the energy registers and phase values: count,
-- sum, min / max, first and last reading, and every decrease between consecutive readings of the hour.
--
-- The database itself says which hours changed: a statement trigger on readings writes one row to
-- reading_hours_dirty per INSERT / COPY / UPDATE statement (the range of times and meters it touched,
-- from its transition table), in the same transaction. The rules pass folds what it sees there (the
-- rows it deletes are exactly the ones its snapshot holds, their readings visible in it) by
-- recomputing those hours from the readings: a late reading for an old interval, or a reading the
-- validation marks suspect, is folded in exactly once, and a fold that fails leaves the log as it was.

CREATE TABLE reading_hours (
    meter_id    integer NOT NULL,
    quantity_id smallint NOT NULL,
    hour_end    timestamptz NOT NULL,
    n           integer NOT NULL,
    total       double precision NOT NULL,
    vmin        double precision NOT NULL,
    vmax        double precision NOT NULL,
    first_ts    timestamptz NOT NULL,
    first_value double precision NOT NULL,
    last_ts     timestamptz NOT NULL,
    last_value  double precision NOT NULL,
    drops_at    timestamptz[],        -- readings below the one before them in the hour (NULL: none)
    drops_prev  double precision[],
    drops_value double precision[],
    PRIMARY KEY (meter_id, quantity_id, hour_end)  -- the pass reads each series in order, no sort
);
CREATE INDEX reading_hours_by_hour ON reading_hours (hour_end);  -- the fold replaces and prunes hours

CREATE TABLE reading_hours_dirty (
    id       bigserial PRIMARY KEY,
    lo       timestamptz NOT NULL,
    hi       timestamptz NOT NULL,
    meter_lo integer,                 -- NULL: every meter
    meter_hi integer
);

-- Hours before `kept_from` have been pruned (or never summarised): a pass reaching further back
-- marks that stretch dirty first.
CREATE TABLE reading_hours_kept (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    kept_from timestamptz NOT NULL
);
INSERT INTO reading_hours_kept (kept_from) VALUES ('-infinity');

CREATE FUNCTION reading_hours_touched() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO reading_hours_dirty (lo, hi, meter_lo, meter_hi)
    SELECT min(ts), max(ts), min(meter_id), max(meter_id) FROM touched HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE TRIGGER reading_hours_inserted AFTER INSERT ON readings
    REFERENCING NEW TABLE AS touched FOR EACH STATEMENT EXECUTE FUNCTION reading_hours_touched();
CREATE TRIGGER reading_hours_updated AFTER UPDATE ON readings
    REFERENCING NEW TABLE AS touched FOR EACH STATEMENT EXECUTE FUNCTION reading_hours_touched();

-- What is stored already is summarised at the first pass.
INSERT INTO reading_hours_dirty (lo, hi, meter_lo, meter_hi)
SELECT min(ts), max(ts), NULL, NULL FROM readings HAVING count(*) > 0;

GRANT SELECT, INSERT, DELETE ON reading_hours TO headend_daemon;
GRANT SELECT, INSERT, DELETE ON reading_hours_dirty TO headend_daemon;
GRANT USAGE ON SEQUENCE reading_hours_dirty_id_seq TO headend_daemon;
GRANT SELECT, UPDATE ON reading_hours_kept TO headend_daemon;
