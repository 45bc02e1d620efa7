-- Manual disconnects follow the two-person rule of automation by default (issue 21): every disconnect an
-- operator asks for (cause 'manual') waits for a second operator holding `approver` unless the setting
-- safety.manual_approval_above (written by the daemon from [safety] manual_approval_above) allows that
-- many per operator and hour first. Absent setting: 0, each one waits. A field switch (cause 'field',
-- executed by the engineer's own process at the meter) keeps the hourly rule of 0017: beyond 10 by one
-- engineer within an hour, each waits.

CREATE OR REPLACE FUNCTION headend_manual_approval_above() RETURNS integer LANGUAGE sql STABLE
    SET search_path = pg_catalog, public AS $$
    SELECT coalesce((SELECT value::integer FROM headend_settings WHERE key = 'safety.manual_approval_above'), 0)
$$;

CREATE OR REPLACE FUNCTION commands_two_person() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
DECLARE allowed integer := 10;  -- a field switch's hourly rule (0017)
BEGIN
    IF NEW.action <> 'disconnect' OR NEW.operator !~ '^[0-9]{1,8}$' OR NEW.requires_approval
       OR NEW.cause NOT IN ('manual', 'field') THEN
        RETURN NEW;
    END IF;
    IF NEW.cause = 'manual' THEN
        allowed := headend_manual_approval_above();
    END IF;
    IF (SELECT count(*) FROM commands c WHERE c.operator = NEW.operator AND c.action = 'disconnect'
                                         AND c.cause = NEW.cause AND c.created_at > now() - interval '1 hour')
       >= allowed THEN
        NEW.requires_approval := true;
    END IF;
    RETURN NEW;
END $$;

-- The daemon publishes its [safety] value at start (an admin at the desk may only remove it: back to 0).
GRANT UPDATE ON headend_settings TO headend_daemon;

-- The records fee control and billing decide from, written only by whom they belong to (issue 21):
-- * fee_control_refusals and relay_mismatches are the daemon's (automation and reconciliation; a
--   forged mismatch would make the daemon close or open a relay).
-- * vee_state (how far readings are validated) and vee_holds (opening one) are the daemon's validation
--   pass, or a signed-in cashier's or admin's (`headend billing bill` validates first); a hold stays
--   open with no resolver named until an admin resolves it (0013).
-- * meter_identities (the meter numbers dial-in verification compares before any password) are
--   learned by the daemon or recorded by a signed-in admin (inventory, resolving an identity hold).
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON fee_control_refusals, relay_mismatches FROM PUBLIC, headend_billing;

CREATE FUNCTION validation_writer_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT headend_is_owner() AND NOT headend_is_daemon()
       AND NOT headend_operator_holds(headend_current_operator(), 'cashier') THEN
        PERFORM headend_require_role('admin', format('writing %s', TG_TABLE_NAME));
    END IF;
    IF TG_TABLE_NAME = 'vee_holds' AND TG_OP = 'UPDATE' THEN
        IF NEW.resolved_at IS NULL AND (NEW.resolved_by, NEW.resolution_reason)
                                       IS DISTINCT FROM (OLD.resolved_by, OLD.resolution_reason) THEN
            RAISE EXCEPTION 'hold %: its resolver and reason are written when an admin resolves it', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER vee_state_writer BEFORE INSERT OR UPDATE OR DELETE ON vee_state
    FOR EACH ROW EXECUTE FUNCTION validation_writer_guard();
CREATE TRIGGER vee_holds_writer BEFORE INSERT OR UPDATE ON vee_holds
    FOR EACH ROW EXECUTE FUNCTION validation_writer_guard();

CREATE FUNCTION identity_writer_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT headend_is_owner() AND NOT headend_is_daemon() THEN
        PERFORM headend_require_role('admin', format('writing the recorded identity of meter %s', NEW.meter_id));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER meter_identities_writer BEFORE INSERT OR UPDATE ON meter_identities
    FOR EACH ROW EXECUTE FUNCTION identity_writer_guard();
REVOKE DELETE, TRUNCATE ON meter_identities FROM PUBLIC, headend_daemon, headend_billing;
