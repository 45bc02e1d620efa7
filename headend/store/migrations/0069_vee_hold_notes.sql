-- Notes on an open VEE hold: an admin who looked at a hold and keeps it open says why (the console's
-- "keep with a note"). Written under the authenticated admin's own id, only while the hold is open;
-- history, never rewritten or removed.
CREATE TABLE vee_hold_notes (
    id       bigserial PRIMARY KEY,
    hold_id  bigint NOT NULL REFERENCES vee_holds(id),
    operator text NOT NULL,
    note     text NOT NULL CHECK (length(btrim(note)) BETWEEN 1 AND 500),
    noted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vee_hold_notes_hold_idx ON vee_hold_notes (hold_id, id);

GRANT SELECT ON vee_hold_notes TO headend_daemon, headend_billing, headend_reporting;
GRANT INSERT ON vee_hold_notes TO headend_billing;
GRANT USAGE ON SEQUENCE vee_hold_notes_id_seq TO headend_billing;
REVOKE UPDATE, DELETE, TRUNCATE ON vee_hold_notes FROM PUBLIC, headend_daemon, headend_billing;

CREATE FUNCTION vee_hold_notes_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF headend_is_owner() THEN
        RETURN NEW;
    END IF;
    PERFORM headend_require_role('admin', format('a note on hold %s', NEW.hold_id));
    IF NEW.operator IS DISTINCT FROM headend_current_operator() THEN
        RAISE EXCEPTION 'hold %: % is not the operator authenticated on this connection', NEW.hold_id, NEW.operator
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM vee_holds WHERE id = NEW.hold_id AND resolved_at IS NULL) THEN
        RAISE EXCEPTION 'no open hold %', NEW.hold_id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER vee_hold_notes_guard BEFORE INSERT OR UPDATE ON vee_hold_notes
    FOR EACH ROW EXECUTE FUNCTION vee_hold_notes_guard();
