-- Daily line loss per transformer area (0030): supply − Σ customers from the energy registers at the
-- day's two boundaries (the midnight freezes, or any actual / backfilled reading stored at exactly that
-- instant; estimated and suspect readings never count). The supply meter's delta is multiplied by the
-- area's CT × PT ratio, each customer's by its meter multiplier. An area-day is computed only when every
-- meter (supply and the customers in force that day) has both registers; otherwise it is stored
-- incomplete with the missing meters. Derived data only: any headend login may refresh it through
-- headend_line_loss_refresh (SECURITY DEFINER); nobody writes the table directly.

CREATE TABLE line_losses (
    area_id       integer NOT NULL REFERENCES areas (id) ON DELETE CASCADE,
    day           date NOT NULL,
    supply_kwh    double precision,
    customers_kwh double precision,
    loss_kwh      double precision,
    loss_pct      double precision,
    meters        integer NOT NULL,                    -- supply + customers in force that day
    missing       integer[] NOT NULL DEFAULT '{}',     -- meters without both boundary registers
    inputs        text NOT NULL,                       -- fingerprint of membership, factors, registers
    computed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (area_id, day),
    CHECK ((cardinality(missing) = 0) = (loss_kwh IS NOT NULL))
);
CREATE INDEX line_losses_day ON line_losses (day);

-- Compute the area-days of p_day (boundaries p_lo, p_hi: the local midnights in UTC) for every area,
-- writing only rows that are new or whose inputs changed; returns how many were written.
CREATE FUNCTION headend_line_loss_refresh(p_day date, p_lo timestamptz, p_hi timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
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
GRANT SELECT ON line_losses TO headend_daemon, headend_billing, headend_reporting;
