-- Hourly register values per meter and quantity (the native twin of the TimescaleDB continuous
-- aggregate): a table refreshed by headend_refresh_hourly() (the daemon's upkeep) plus live rows past
-- its watermark, so readings_hourly is always complete. A local day, week or month in any whole-hour
-- time zone is a set of whole UTC hours: the console's consumption bars in the station's zone.

INSERT INTO headend_settings (key, value) VALUES ('hourly_watermark', '-infinity');

CREATE TABLE readings_hourly_mat (
    meter_id    integer NOT NULL,
    quantity_id smallint NOT NULL,
    hour        timestamptz NOT NULL,
    last_value  double precision,
    readings    bigint NOT NULL,
    PRIMARY KEY (meter_id, quantity_id, hour)
);

CREATE FUNCTION headend_hourly_watermark() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT value::timestamptz FROM headend_settings WHERE key = 'hourly_watermark'
$$;

CREATE FUNCTION headend_hourly_rows(lo timestamptz, hi timestamptz)
RETURNS TABLE (meter_id integer, quantity_id smallint, hour timestamptz, last_value double precision,
               readings bigint)
LANGUAGE sql STABLE AS $$
    SELECT r.meter_id, r.quantity_id, date_bin('1 hour', r.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
           (array_agg(r.value ORDER BY r.ts DESC))[1], count(r.value)
    FROM readings r
    WHERE r.ts >= lo AND r.ts < hi AND r.value IS NOT NULL AND r.quality <> 'suspect'
    GROUP BY 1, 2, 3
$$;

-- Recompute the whole UTC hours overlapping [lo, hi); advance the watermark when contiguous with it.
CREATE FUNCTION headend_refresh_hourly(lo timestamptz, hi timestamptz) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    origin constant timestamptz := TIMESTAMPTZ '2000-01-01 00:00:00+00';
    h_lo   timestamptz := date_bin('1 hour', lo, origin);
    h_hi   timestamptz := date_bin('1 hour', hi - interval '1 microsecond', origin) + interval '1 hour';
    mark   timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('headend.readings_hourly'));
    mark := headend_hourly_watermark();
    DELETE FROM readings_hourly_mat WHERE hour >= h_lo AND hour < h_hi;
    INSERT INTO readings_hourly_mat SELECT * FROM headend_hourly_rows(h_lo, h_hi);
    IF mark = '-infinity' OR h_lo <= mark THEN
        UPDATE headend_settings SET value = greatest(mark, h_hi)::text, updated_at = now()
        WHERE key = 'hourly_watermark';
    END IF;
END $$;

CREATE VIEW readings_hourly AS
SELECT m.meter_id, m.quantity_id, m.hour, m.last_value, m.readings
FROM readings_hourly_mat m
WHERE m.hour < headend_hourly_watermark()
UNION ALL
SELECT * FROM headend_hourly_rows(headend_hourly_watermark(), 'infinity');

GRANT SELECT ON readings_hourly, readings_hourly_mat TO headend_daemon, headend_billing, headend_reporting;
