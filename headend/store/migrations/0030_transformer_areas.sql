-- Transformer areas (台区): a supply meter (总表) with its CT and PT ratios, and the customer meters
-- it feeds. A meter belongs to one area at a time: memberships carry effective dates (valid_from
-- inclusive, valid_to exclusive, NULL while current) and never overlap for one meter, so a move is
-- the old membership closed and a new one opened on the same date. Both tables are inventory: an
-- authenticated admin writes them (0014's inventory_guard), from the operators' desk login.

CREATE TABLE areas (
    id              serial PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    supply_meter_id integer NOT NULL UNIQUE REFERENCES meters (id),
    ct_ratio        double precision NOT NULL DEFAULT 1 CHECK (ct_ratio > 0 AND ct_ratio <= 100000),
    pt_ratio        double precision NOT NULL DEFAULT 1 CHECK (pt_ratio > 0 AND pt_ratio <= 100000),
    loss_limit_pct  double precision NOT NULL DEFAULT 10 CHECK (loss_limit_pct > 0 AND loss_limit_pct <= 100),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE area_members (
    meter_id   integer NOT NULL REFERENCES meters (id),
    area_id    integer NOT NULL REFERENCES areas (id),
    valid_from date NOT NULL,
    valid_to   date,
    PRIMARY KEY (meter_id, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
CREATE INDEX area_members_area ON area_members (area_id, valid_from);

-- Checked at commit (an import closes and opens memberships in any order): no two memberships of one
-- meter overlap, and no area counts its own supply meter as a customer. The advisory lock makes a
-- concurrent import of the same meter wait and then see this one's rows.
CREATE FUNCTION area_members_check() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('headend.area_members'), NEW.meter_id);
    IF EXISTS (
        SELECT 1 FROM area_members a JOIN area_members b
            ON a.meter_id = b.meter_id AND a.valid_from < b.valid_from
           AND (a.valid_to IS NULL OR a.valid_to > b.valid_from)
        WHERE a.meter_id = NEW.meter_id
    ) THEN
        RAISE EXCEPTION 'meter % would belong to two areas at once', NEW.meter_id
            USING ERRCODE = 'exclusion_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM areas WHERE id = NEW.area_id AND supply_meter_id = NEW.meter_id) THEN
        RAISE EXCEPTION 'meter % is the supply meter of its area, not a customer of it', NEW.meter_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER area_members_no_overlap AFTER INSERT OR UPDATE ON area_members
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION area_members_check();

CREATE TRIGGER areas_writer BEFORE INSERT OR UPDATE OR DELETE ON areas
    FOR EACH ROW EXECUTE FUNCTION inventory_guard();
CREATE TRIGGER area_members_writer BEFORE INSERT OR UPDATE OR DELETE ON area_members
    FOR EACH ROW EXECUTE FUNCTION inventory_guard();

GRANT SELECT ON areas, area_members TO headend_daemon, headend_billing, headend_reporting;
GRANT INSERT, UPDATE ON areas TO headend_billing;
GRANT INSERT, UPDATE, DELETE ON area_members TO headend_billing;
GRANT USAGE ON SEQUENCE areas_id_seq TO headend_billing;
