-- The documented logins run everything they are documented for (issue 21): the test suite now runs
-- the daemon and the CLI under headend_app and headend_desk, and two of the desk's duties were refused.

-- `headend operators list` (the desk) shows each operator's failed sign-ins and lock: 0015 added the
-- columns without the read grant 0008 gave the other columns (never the password hash).
GRANT SELECT (failed_sign_ins, locked_until) ON operators TO headend_billing, headend_reporting;

-- `headend commands cancel` keeps who cancelled and why in the command's evidence; 0008's guard let
-- only the daemon write evidence, so an operator's cancel of a pending command was refused. The
-- evidence may now change on that one move, pending -> cancelled, by the key `cancelled` alone, naming
-- the operator signed in on the connection (the cancel itself still needs the operator or admin role,
-- 0017). Everything else the guard refuses is unchanged.
CREATE OR REPLACE FUNCTION commands_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.operator ~ '^[0-9]{1,8}$' AND NOT headend_is_owner() THEN
            PERFORM headend_check_actor(NEW.operator);
            PERFORM headend_require_role('operator', 'creating a relay command');
        ELSIF NEW.operator !~ '^[0-9]{1,8}$' THEN
            PERFORM headend_check_actor(NEW.operator);
        END IF;
        IF NEW.approved_by IS NOT NULL THEN
            RAISE EXCEPTION 'a command is approved after it is created, never at creation'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    IF (NEW.meter_id, NEW.action, NEW.cause, NEW.operator, NEW.dry_run, NEW.idempotency_key, NEW.expires_at)
       IS DISTINCT FROM
       (OLD.meter_id, OLD.action, OLD.cause, OLD.operator, OLD.dry_run, OLD.idempotency_key, OLD.expires_at)
       OR (OLD.requires_approval AND NOT NEW.requires_approval) THEN
        IF NOT headend_is_owner() THEN
            RAISE EXCEPTION 'command %: what, why, who and approval need are fixed at creation', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    IF NEW.approved_by IS DISTINCT FROM OLD.approved_by THEN
        IF OLD.approved_by IS NOT NULL OR NEW.approved_by IS NULL THEN
            RAISE EXCEPTION 'command %: an approval is given once and never withdrawn', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NOT headend_operator_holds(NEW.approved_by, 'approver') THEN
            RAISE EXCEPTION 'command %: % is not an active operator with the approver role', OLD.id, NEW.approved_by
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NOT headend_is_owner() AND NEW.approved_by IS DISTINCT FROM headend_current_operator() THEN
            RAISE EXCEPTION 'command %: the approver must be the operator authenticated on this connection', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    IF (NEW.state IS DISTINCT FROM OLD.state AND NEW.state <> 'cancelled'
        OR (NEW.attempts, NEW.sent_at) IS DISTINCT FROM (OLD.attempts, OLD.sent_at)
        OR NEW.evidence IS DISTINCT FROM OLD.evidence AND NOT (
            NEW.state = 'cancelled' AND OLD.state = 'pending'
            AND NEW.evidence - 'cancelled' = OLD.evidence - 'cancelled'
            AND headend_current_operator() IS NOT NULL
            AND NEW.evidence -> 'cancelled' ->> 'by' IS NOT DISTINCT FROM headend_current_operator()))
       AND NOT headend_is_owner() AND NOT headend_is_daemon()
       AND NOT (OLD.cause = 'field' AND OLD.operator IS NOT DISTINCT FROM headend_current_operator()) THEN
        RAISE EXCEPTION 'command %: only the daemon (or, for a field switch, its engineer) sends, confirms or fails a command', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
