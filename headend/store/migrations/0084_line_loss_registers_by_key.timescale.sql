-- The line-loss refresh (0031) with nested loops off, so that its plan does not follow stale
-- statistics: the closing midnight's freezes are new when the refresh runs, and a planner that sees
-- none at that instant may loop over a materialised scan of them for every member (quadratic in the
-- meters; 55 s at 20,000 meters in the native layout, where 0084_*.native.sql reads each register
-- by key instead). Here each boundary instant's registers come from the chunk's time index and are
-- hashed against the members, as the planner chose with fresh statistics: one index scan per
-- instant, faster than a lookup per meter and chunk. Same inputs, same figures, same fingerprint.

CREATE OR REPLACE FUNCTION headend_line_loss_refresh(p_day date, p_lo timestamptz, p_hi timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public SET enable_nestloop = off AS $$
DECLARE written integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('headend.line_losses'), (p_day - DATE '2000-01-01'));
    WITH members AS (
        SELECT am.area_id, am.meter_id, m.multiplier AS factor, false AS supply
        FROM area_members am JOIN meters m ON m.id = am.meter_id
        WHERE am.valid_from <= p_day AND (am.valid_to IS NULL OR am.valid_to > p_day)
        UNION ALL
        SELECT a.id, a.supply_meter_id, a.ct_ratio * a.pt_ratio, true FROM areas a
    ), registers AS (
        SELECT mb.area_id, mb.meter_id, mb.factor, mb.supply, r0.value AS v0, r1.value AS v1
        FROM members mb
        LEFT JOIN readings r0 ON r0.meter_id = mb.meter_id AND r0.ts = p_lo
            AND r0.quantity_id = (SELECT id FROM quantities WHERE name = 'energy_import_kwh')
            AND r0.quality IN ('freeze', 'actual', 'backfilled')
        LEFT JOIN readings r1 ON r1.meter_id = mb.meter_id AND r1.ts = p_hi
            AND r1.quantity_id = (SELECT id FROM quantities WHERE name = 'energy_import_kwh')
            AND r1.quality IN ('freeze', 'actual', 'backfilled')
    ), per_area AS (
        SELECT area_id,
               sum((v1 - v0) * factor) FILTER (WHERE supply) AS supply_kwh,
               coalesce(sum((v1 - v0) * factor) FILTER (WHERE NOT supply), 0) AS customers_kwh,
               coalesce(array_agg(meter_id ORDER BY meter_id) FILTER (WHERE v0 IS NULL OR v1 IS NULL), '{}')
                   AS missing,
               count(*)::integer AS meters,
               md5(string_agg(concat_ws(':', meter_id, supply, factor, v0, v1), ',' ORDER BY supply, meter_id))
                   AS inputs
        FROM registers GROUP BY area_id
    ), computed AS (
        SELECT area_id, missing, meters, inputs,
               CASE WHEN cardinality(missing) = 0 THEN supply_kwh END AS supply_kwh,
               CASE WHEN cardinality(missing) = 0 THEN customers_kwh END AS customers_kwh,
               CASE WHEN cardinality(missing) = 0 THEN supply_kwh - customers_kwh END AS loss_kwh,
               CASE WHEN cardinality(missing) = 0 AND supply_kwh > 0
                    THEN 100 * (supply_kwh - customers_kwh) / supply_kwh END AS loss_pct
        FROM per_area
    )
    INSERT INTO line_losses (area_id, day, supply_kwh, customers_kwh, loss_kwh, loss_pct, meters, missing, inputs)
    SELECT area_id, p_day, supply_kwh, customers_kwh, loss_kwh, loss_pct, meters, missing, inputs FROM computed
    ON CONFLICT (area_id, day) DO UPDATE SET
        supply_kwh = EXCLUDED.supply_kwh, customers_kwh = EXCLUDED.customers_kwh, loss_kwh = EXCLUDED.loss_kwh,
        loss_pct = EXCLUDED.loss_pct, meters = EXCLUDED.meters, missing = EXCLUDED.missing,
        inputs = EXCLUDED.inputs, computed_at = now()
    WHERE line_losses.inputs IS DISTINCT FROM EXCLUDED.inputs;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END $$;

REVOKE ALL ON FUNCTION headend_line_loss_refresh(date, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION headend_line_loss_refresh(date, timestamptz, timestamptz)
    TO headend_daemon, headend_billing, headend_reporting;
