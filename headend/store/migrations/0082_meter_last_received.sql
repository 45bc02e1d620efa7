-- Each meter's newest reading receipt (max readings.received_at), kept as readings are written: the
-- meter page's last contact read it by scanning the meter's readings in every chunk or partition
-- (about 15 ms a page over a year of daily chunks, bench/console.py). A statement trigger folds each
-- INSERT / COPY into it (the transition table's newest receipt per meter); an UPDATE cannot change
-- received_at (readings_update_guard), so inserts are all there is to follow. Meters are upserted in
-- id order, so two writers' statements lock their rows in the same order.

CREATE TABLE meter_last_received (
    meter_id    integer PRIMARY KEY,
    received_at timestamptz NOT NULL
);

CREATE FUNCTION meter_last_received_touched() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO meter_last_received AS k (meter_id, received_at)
    SELECT meter_id, max(received_at) FROM touched GROUP BY meter_id ORDER BY meter_id
    ON CONFLICT (meter_id) DO UPDATE SET received_at = EXCLUDED.received_at
        WHERE k.received_at < EXCLUDED.received_at;
    RETURN NULL;
END $$;

CREATE TRIGGER meter_last_received_inserted AFTER INSERT ON readings
    REFERENCING NEW TABLE AS touched FOR EACH STATEMENT EXECUTE FUNCTION meter_last_received_touched();

-- What is stored already.
INSERT INTO meter_last_received (meter_id, received_at)
SELECT meter_id, max(received_at) FROM readings GROUP BY meter_id;

GRANT SELECT ON meter_last_received TO headend_daemon, headend_billing, headend_reporting;
