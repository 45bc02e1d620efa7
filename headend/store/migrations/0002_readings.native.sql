-- Interval readings on plain PostgreSQL: declarative range partitions by time, created ahead by
-- headend_ensure_partitions(); the daily aggregate is a table refreshed by headend_refresh_daily()
-- plus live rows past its watermark, so readings_daily is always complete (like a real-time cagg).

INSERT INTO headend_settings (key, value) VALUES
    ('storage_mode', 'native'),
    ('partition_interval', '7 days'),
    ('partition_origin', '2000-01-03 00:00:00+00'),   -- a Monday: partitions start on Mondays 00:00 UTC
    ('daily_watermark', '-infinity');

CREATE TABLE readings (
    meter_id    integer NOT NULL,
    quantity_id smallint NOT NULL,
    ts          timestamptz NOT NULL,                  -- the interval the value belongs to, UTC
    value       double precision,
    quality     reading_quality NOT NULL DEFAULT 'actual',
    source_id   smallint NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, quantity_id, ts),
    CHECK ((quality = 'missing') = (value IS NULL))
) PARTITION BY RANGE (ts);

CREATE TABLE readings_partitions (
    name      text PRIMARY KEY,
    starts_at timestamptz NOT NULL UNIQUE,
    ends_at   timestamptz NOT NULL,
    detached  boolean NOT NULL DEFAULT false
);

CREATE FUNCTION headend_partition_start(t timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT date_bin(
        (SELECT value::interval FROM headend_settings WHERE key = 'partition_interval'),
        t,
        (SELECT value::timestamptz FROM headend_settings WHERE key = 'partition_origin'))
$$;

-- Create the partitions holding the given timestamps (only those); returns how many were created.
-- SECURITY DEFINER: the daemon's role may create partitions without owning readings.
CREATE FUNCTION headend_ensure_partitions(stamps timestamptz[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    width   interval := (SELECT value::interval FROM headend_settings WHERE key = 'partition_interval');
    s       timestamptz;
    part    text;
    created integer := 0;
BEGIN
    FOR s IN SELECT DISTINCT headend_partition_start(x) FROM unnest(stamps) AS x WHERE x IS NOT NULL LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM readings_partitions WHERE starts_at = s);
        PERFORM pg_advisory_xact_lock(hashtext('headend.readings_partitions'));
        CONTINUE WHEN EXISTS (SELECT 1 FROM readings_partitions WHERE starts_at = s);
        part := 'readings_p' || to_char(s AT TIME ZONE 'UTC', 'YYYYMMDD');
        EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)', part, s, s + width);
        INSERT INTO readings_partitions (name, starts_at, ends_at) VALUES (part, s, s + width);
        created := created + 1;
    END LOOP;
    RETURN created;
END $$;

-- Create every partition from lo to hi (the daemon calls this ahead of time).
CREATE FUNCTION headend_ensure_partitions_between(lo timestamptz, hi timestamptz) RETURNS integer
LANGUAGE sql AS $$
    SELECT headend_ensure_partitions(ARRAY(
        SELECT generate_series(headend_partition_start(lo), hi,
                               (SELECT value::interval FROM headend_settings WHERE key = 'partition_interval'))))
$$;

-- Detach (not drop) partitions entirely older than cutoff; returns their names for archiving/dropping.
CREATE FUNCTION headend_detach_partitions_before(cutoff timestamptz) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE part text;
BEGIN
    FOR part IN SELECT name FROM readings_partitions WHERE ends_at <= cutoff AND NOT detached ORDER BY starts_at LOOP
        EXECUTE format('ALTER TABLE readings DETACH PARTITION %I', part);
        UPDATE readings_partitions SET detached = true WHERE name = part;
        RETURN NEXT part;
    END LOOP;
END $$;

SELECT headend_ensure_partitions_between(now() - interval '35 days', now() + interval '14 days');

-- Daily aggregate per meter and quantity (UTC days).
CREATE TABLE readings_daily_mat (
    meter_id    integer NOT NULL,
    quantity_id smallint NOT NULL,
    day         timestamptz NOT NULL,
    first_value double precision,
    last_value  double precision,
    min_value   double precision,
    max_value   double precision,
    readings    bigint NOT NULL,
    PRIMARY KEY (meter_id, quantity_id, day)
);

CREATE FUNCTION headend_daily_watermark() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT value::timestamptz FROM headend_settings WHERE key = 'daily_watermark'
$$;

CREATE FUNCTION headend_daily_rows(lo timestamptz, hi timestamptz)
RETURNS TABLE (meter_id integer, quantity_id smallint, day timestamptz, first_value double precision,
               last_value double precision, min_value double precision, max_value double precision,
               readings bigint)
LANGUAGE sql STABLE AS $$
    SELECT r.meter_id, r.quantity_id, date_bin('1 day', r.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00'),
           (array_agg(r.value ORDER BY r.ts))[1], (array_agg(r.value ORDER BY r.ts DESC))[1],
           min(r.value), max(r.value), count(r.value)
    FROM readings r
    WHERE r.ts >= lo AND r.ts < hi AND r.value IS NOT NULL AND r.quality <> 'suspect'
    GROUP BY 1, 2, 3
$$;

-- Recompute the whole UTC days overlapping [lo, hi); advance the watermark when contiguous with it.
CREATE FUNCTION headend_refresh_daily(lo timestamptz, hi timestamptz) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    origin constant timestamptz := TIMESTAMPTZ '2000-01-01 00:00:00+00';
    d_lo   timestamptz := date_bin('1 day', lo, origin);
    d_hi   timestamptz := date_bin('1 day', hi - interval '1 microsecond', origin) + interval '1 day';
    mark   timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('headend.readings_daily'));
    mark := headend_daily_watermark();
    DELETE FROM readings_daily_mat WHERE day >= d_lo AND day < d_hi;
    INSERT INTO readings_daily_mat SELECT * FROM headend_daily_rows(d_lo, d_hi);
    IF mark = '-infinity' OR d_lo <= mark THEN
        UPDATE headend_settings SET value = greatest(mark, d_hi)::text, updated_at = now()
        WHERE key = 'daily_watermark';
    END IF;
END $$;

CREATE VIEW readings_daily AS
SELECT m.meter_id, m.quantity_id, m.day, m.first_value, m.last_value, m.min_value, m.max_value, m.readings
FROM readings_daily_mat m
WHERE m.day < headend_daily_watermark()
UNION ALL
SELECT * FROM headend_daily_rows(
    CASE WHEN headend_daily_watermark() = '-infinity' THEN '-infinity' ELSE headend_daily_watermark() END,
    'infinity');
