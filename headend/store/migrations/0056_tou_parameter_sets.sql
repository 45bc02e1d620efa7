-- Time-of-use parameter sets (issue 25): the seasons, daily tables, holidays and rest days a meter
-- keeps, as data, versioned like a tariff. `headend params set add NAME --file` (or `from-tariff`)
-- adds the next version of NAME; a version, once added, is never changed: campaigns name it.
CREATE TABLE tou_parameter_sets (
    id          serial PRIMARY KEY,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    version     integer NOT NULL CHECK (version >= 1),
    definition  jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    tariff_id   integer REFERENCES tariffs(id),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, version)
);
GRANT SELECT ON tou_parameter_sets TO headend_daemon, headend_billing, headend_reporting;
GRANT INSERT ON tou_parameter_sets TO headend_billing;
GRANT USAGE ON SEQUENCE tou_parameter_sets_id_seq TO headend_billing;
REVOKE UPDATE, DELETE, TRUNCATE ON tou_parameter_sets FROM PUBLIC, headend_daemon, headend_billing;

-- Added by an admin, under the operator signed in on the connection; never changed afterwards.
CREATE FUNCTION tou_parameter_sets_guard() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF NOT headend_is_owner() THEN
            RAISE EXCEPTION 'parameter set % version %: a version is never changed; add a new one',
                OLD.name, OLD.version USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NOT headend_is_owner() THEN
        PERFORM headend_require_role('admin', 'adding a parameter set');
        IF NEW.created_by IS DISTINCT FROM headend_current_operator() THEN
            RAISE EXCEPTION 'a parameter set is added under the operator signed in'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tou_parameter_sets_guard BEFORE INSERT OR UPDATE OR DELETE ON tou_parameter_sets
    FOR EACH ROW EXECUTE FUNCTION tou_parameter_sets_guard();
