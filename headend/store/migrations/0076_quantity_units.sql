-- A quantity's unit, from the suffix its canonical name ends in (energy_import_kwh: kWh, voltage_a_v:
-- V), set when the quantity is first stored and filled in for those already stored. Nothing set it
-- before, so the console's latest readings showed no unit. Names without an electrical unit suffix
-- (relay, power_factor) keep none; a unit stored explicitly is kept.
CREATE FUNCTION headend_quantity_unit(p_name text) RETURNS text LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog AS $$
    SELECT CASE substring(p_name FROM '_([a-z]+)$')
        WHEN 'kwh' THEN 'kWh' WHEN 'kvarh' THEN 'kvarh' WHEN 'kvah' THEN 'kVAh'
        WHEN 'kw' THEN 'kW' WHEN 'kvar' THEN 'kvar' WHEN 'kva' THEN 'kVA'
        WHEN 'v' THEN 'V' WHEN 'a' THEN 'A' WHEN 'hz' THEN 'Hz'
    END
$$;

CREATE FUNCTION quantities_unit() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    NEW.unit := coalesce(NEW.unit, headend_quantity_unit(NEW.name));
    RETURN NEW;
END $$;
CREATE TRIGGER quantities_unit BEFORE INSERT ON quantities FOR EACH ROW EXECUTE FUNCTION quantities_unit();

UPDATE quantities SET unit = headend_quantity_unit(name) WHERE unit IS NULL;
