-- Hourly register values per meter and quantity, a real-time continuous aggregate beside
-- readings_daily: a local day, week or month in any whole-hour time zone is a set of whole UTC hours,
-- so the console's consumption bars in the station's zone come from here (readings_daily has UTC days).
-- The policy starts at the oldest data (start_offset NULL): its first run after an upgrade
-- materializes the history, later runs only what changed.

CREATE MATERIALIZED VIEW readings_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT meter_id, quantity_id, time_bucket(INTERVAL '1 hour', ts) AS hour,
       last(value, ts) AS last_value, count(value) AS readings
FROM readings
WHERE value IS NOT NULL AND quality <> 'suspect'
GROUP BY meter_id, quantity_id, time_bucket(INTERVAL '1 hour', ts)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('readings_hourly',
    start_offset => NULL, end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour');

GRANT SELECT ON readings_hourly TO headend_daemon, headend_billing, headend_reporting;
