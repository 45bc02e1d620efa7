-- Sign-in lockout: five wrong passwords in a row lock an operator for 15 minutes, so a guesser gets
-- five tries per quarter hour instead of thousands. A right password resets the count; after a lock
-- runs out, one more wrong password locks again. An admin unlocks early (`headend operators unlock`,
-- audited); a new password set by an admin unlocks too. Each lock is recorded in operator_lockouts
-- (append-only, written by the sign-in function alone: the failed sign-in has no actor to audit under).
-- headend_sign_in replaces headend_authenticate, which is dropped so that no path skips the count.

ALTER TABLE operators
    ADD COLUMN failed_sign_ins integer NOT NULL DEFAULT 0 CHECK (failed_sign_ins >= 0),
    ADD COLUMN locked_until timestamptz;

CREATE TABLE operator_lockouts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operator_id   text NOT NULL REFERENCES operators(id),
    locked_at     timestamptz NOT NULL DEFAULT now(),
    locked_until  timestamptz NOT NULL,
    failures      integer NOT NULL,
    client_addr   inet
);
REVOKE ALL ON operator_lockouts FROM PUBLIC, headend_daemon, headend_billing, headend_reporting;

DROP FUNCTION headend_authenticate(text, text);

-- Bind this connection to an operator: ``roles`` when the proof is right, else ``refused`` says why
-- (the same words for an unknown id, a disabled operator and a wrong password; a lock is named).
CREATE FUNCTION headend_sign_in(p_operator text, p_proof text, OUT roles text[], OUT refused text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    max_failures CONSTANT integer := 5;
    lock_for CONSTANT interval := '15 minutes';
    op operators%ROWTYPE;
BEGIN
    SELECT * INTO op FROM operators WHERE id = p_operator AND active FOR UPDATE;
    IF NOT FOUND THEN
        refused := 'unknown, disabled or wrong password';
        RETURN;
    END IF;
    IF op.locked_until > now() THEN
        refused := format('locked until %s after %s failed sign-ins in a row (an admin can unlock it)',
                          to_char(op.locked_until AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
                          op.failed_sign_ins);
        RETURN;
    END IF;
    IF op.password_hash IS DISTINCT FROM p_proof THEN
        UPDATE operators
           SET failed_sign_ins = failed_sign_ins + 1,
               locked_until = CASE WHEN failed_sign_ins + 1 >= max_failures THEN now() + lock_for END
         WHERE id = p_operator
        RETURNING * INTO op;
        IF op.locked_until IS NOT NULL THEN
            INSERT INTO operator_lockouts (operator_id, locked_until, failures, client_addr)
            VALUES (p_operator, op.locked_until, op.failed_sign_ins, inet_client_addr());
        END IF;
        refused := 'unknown, disabled or wrong password';
        RETURN;
    END IF;
    IF op.failed_sign_ins <> 0 OR op.locked_until IS NOT NULL THEN
        UPDATE operators SET failed_sign_ins = 0, locked_until = NULL WHERE id = p_operator;
    END IF;
    DELETE FROM operator_sessions WHERE backend_pid = pg_backend_pid();
    INSERT INTO operator_sessions (backend_pid, backend_start, operator_id)
    VALUES (pg_backend_pid(), headend_backend_start(), p_operator);
    roles := op.roles;
END $$;

-- An admin ends a lock (and the count of failures) before it runs out.
CREATE FUNCTION headend_operator_unlock(p_id text, p_reason text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE me text := headend_require_role('admin', 'unlocking an operator');
BEGIN
    UPDATE operators SET failed_sign_ins = 0, locked_until = NULL, updated_at = now() WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO audit_log (actor, action, entity, entity_id, reason)
    VALUES (coalesce(me, session_user::text), 'operator.unlocked', 'operator', p_id, p_reason);
    RETURN true;
END $$;

-- A new password (the operator themself, or an admin) also ends a lock.
CREATE OR REPLACE FUNCTION headend_operator_set_password(p_id text, p_hash text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE me text := headend_current_operator();
BEGIN
    IF me IS DISTINCT FROM p_id THEN
        me := headend_require_role('admin', 'setting another operator''s password');
    END IF;
    UPDATE operators SET password_hash = p_hash, failed_sign_ins = 0, locked_until = NULL, updated_at = now()
     WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO audit_log (actor, action, entity, entity_id, reason)
    VALUES (coalesce(me, session_user::text), 'operator.password_changed', 'operator', p_id, 'operators passwd');
    RETURN true;
END $$;

REVOKE EXECUTE ON FUNCTION headend_sign_in(text, text), headend_operator_unlock(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION headend_sign_in(text, text), headend_operator_unlock(text, text)
    TO headend_daemon, headend_billing;
