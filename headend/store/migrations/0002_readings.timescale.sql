-- Interval readings on TimescaleDB: a hypertable with 1-day chunks, compressed after 30 days
-- (segment by meter), and a real-time continuous aggregate of daily values per meter and quantity.

CREATE EXTENSION IF NOT EXISTS timescaledb;

INSERT INTO headend_settings (key, value) VALUES ('storage_mode', 'timescale');

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
);

SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'));

ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'meter_id',
    timescaledb.compress_orderby = 'quantity_id, ts'
);
SELECT add_compression_policy('readings', INTERVAL '30 days');

CREATE MATERIALIZED VIEW readings_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT meter_id, quantity_id, time_bucket(INTERVAL '1 day', ts) AS day,
       first(value, ts) AS first_value, last(value, ts) AS last_value,
       min(value) AS min_value, max(value) AS max_value, count(value) AS readings
FROM readings
WHERE value IS NOT NULL AND quality <> 'suspect'
GROUP BY meter_id, quantity_id, time_bucket(INTERVAL '1 day', ts)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_daily',
    start_offset => INTERVAL '35 days', end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');
