-- Operators (工号), their roles and authenticated sessions; what each database role and each operator may
-- write, enforced here so that no client can forge it.
--
-- Trust model (docs/safety.md, SECURITY.md):
-- * The schema owner (the login that runs `headend db migrate`, and superusers) is trusted: it owns the
--   tables and could disable any trigger. Everything below binds the other logins.
-- * A human actor is an operator id of 1-8 digits. A connection writes under a human actor only after
--   headend_authenticate(id, proof) succeeded on that very connection; the proof is the argon2id hash of
--   the operator's password derived with the stored salt and parameters (headend/operators.py). The
--   hashes themselves are readable by the schema owner only.
-- * A machine actor is any other name ('system' for automation, 'executor' for the daemon's command
--   runner). Only logins in headend_daemon write under a machine actor.

CREATE TABLE operators (
    id            text PRIMARY KEY CHECK (id ~ '^[0-9]{1,8}$'),   -- 工号: it is also the meter's operator code
    name          text NOT NULL CHECK (btrim(name) <> ''),
    roles         text[] NOT NULL CHECK (
        cardinality(roles) > 0
        AND roles <@ ARRAY['viewer', 'operator', 'approver', 'cashier', 'admin']::text[]),
    active        boolean NOT NULL DEFAULT true,
    password_hash text NOT NULL CHECK (
        password_hash ~ '^\$argon2id\$v=19\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]{16,}\$[A-Za-z0-9+/]{43}$'),
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Which operator authenticated on which backend (pid + start time, so a reused pid does not inherit it).
CREATE TABLE operator_sessions (
    backend_pid   integer NOT NULL,
    backend_start timestamptz NOT NULL,
    operator_id   text NOT NULL REFERENCES operators(id),
    started_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (backend_pid, backend_start)
);

-- Nobody but the owner touches these tables directly; 0005's default privileges gave reporting SELECT.
REVOKE ALL ON operators, operator_sessions FROM PUBLIC, headend_daemon, headend_billing, headend_reporting;
GRANT SELECT (id, name, roles, active, created_by, created_at, updated_at) ON operators
    TO headend_daemon, headend_billing, headend_reporting;

CREATE FUNCTION headend_is_owner() RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog, public AS $$
    SELECT pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = 'public.operators'::regclass),
                       'MEMBER')
$$;

CREATE FUNCTION headend_is_daemon() RETURNS boolean LANGUAGE sql STABLE SET search_path = pg_catalog, public AS $$
    SELECT pg_has_role(session_user, 'headend_daemon', 'MEMBER')
$$;

CREATE FUNCTION headend_backend_start() RETURNS timestamptz LANGUAGE sql STABLE
    SET search_path = pg_catalog AS $$
    SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()
$$;

-- The argon2 parameters and salt of an active operator (the PHC string without its hash), or NULL.
CREATE FUNCTION headend_password_params(p_operator text) RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
    SELECT regexp_replace(password_hash, '\$[^$]*$', '') FROM operators WHERE id = p_operator AND active
$$;

-- Bind this connection to an operator; returns the operator's roles. Wrong id, disabled or wrong proof
-- raise invalid_password (the same message for all three).
CREATE FUNCTION headend_authenticate(p_operator text, p_proof text) RETURNS text[] LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE granted text[];
BEGIN
    SELECT roles INTO granted FROM operators WHERE id = p_operator AND active AND password_hash = p_proof;
    IF granted IS NULL THEN
        RAISE EXCEPTION 'operator %: unknown, disabled or wrong password', p_operator
            USING ERRCODE = 'invalid_password';
    END IF;
    DELETE FROM operator_sessions WHERE backend_pid = pg_backend_pid();
    INSERT INTO operator_sessions (backend_pid, backend_start, operator_id)
    VALUES (pg_backend_pid(), headend_backend_start(), p_operator);
    RETURN granted;
END $$;

-- The operator authenticated on this connection (NULL if none, or disabled since).
CREATE FUNCTION headend_current_operator() RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
    SELECT s.operator_id FROM operator_sessions s JOIN operators o ON o.id = s.operator_id AND o.active
    WHERE s.backend_pid = pg_backend_pid() AND s.backend_start = headend_backend_start()
$$;

CREATE FUNCTION headend_operator_holds(p_operator text, p_role text) RETURNS boolean LANGUAGE sql STABLE
    SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce((SELECT active AND p_role = ANY (roles) FROM operators WHERE id = p_operator), false)
$$;

-- Refuse unless the connection is the owner or its authenticated operator holds p_role.
CREATE FUNCTION headend_require_role(p_role text, p_what text) RETURNS text LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, public AS $$
DECLARE me text := headend_current_operator();
BEGIN
    IF headend_is_owner() THEN
        RETURN me;
    END IF;
    IF me IS NULL OR NOT headend_operator_holds(me, p_role) THEN
        RAISE EXCEPTION '% needs an authenticated operator with the % role', p_what, p_role
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN me;
END $$;

-- An actor name written by this connection: a human id must be the authenticated operator, a machine
-- name needs a daemon login.
CREATE FUNCTION headend_check_actor(p_actor text) RETURNS void LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, public AS $$
BEGIN
    IF headend_is_owner() THEN
        RETURN;
    END IF;
    IF p_actor ~ '^[0-9]{1,8}$' THEN
        IF p_actor IS DISTINCT FROM headend_current_operator() THEN
            RAISE EXCEPTION 'actor %: not the operator authenticated on this connection', p_actor
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    ELSIF NOT headend_is_daemon() THEN
        RAISE EXCEPTION 'actor %: only the daemon writes as a machine actor', p_actor
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- Operator management: an authenticated admin (or the owner). The very first operator (an admin) is
-- created by the owner only: `headend operators add --bootstrap` with the owner's DSN.
CREATE FUNCTION headend_operator_add(p_id text, p_name text, p_roles text[], p_hash text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE me text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM operators) THEN
        IF NOT headend_is_owner() THEN
            RAISE EXCEPTION 'no operator exists yet: the first one is created with the schema owner''s login'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    me := headend_require_role('admin', 'adding an operator');
    INSERT INTO operators (id, name, roles, password_hash, created_by)
    VALUES (p_id, p_name, p_roles, p_hash, coalesce(me, session_user::text));
    INSERT INTO audit_log (actor, action, entity, entity_id, reason, details)
    VALUES (coalesce(me, session_user::text), 'operator.added', 'operator', p_id, 'operators add',
            jsonb_build_object('name', p_name, 'roles', to_jsonb(p_roles)));
END $$;

CREATE FUNCTION headend_operator_set_active(p_id text, p_active boolean, p_reason text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE me text := headend_require_role('admin', 'disabling an operator');
BEGIN
    UPDATE operators SET active = p_active, updated_at = now() WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM operator_sessions WHERE operator_id = p_id AND NOT p_active;
    INSERT INTO audit_log (actor, action, entity, entity_id, reason)
    VALUES (coalesce(me, session_user::text), CASE WHEN p_active THEN 'operator.enabled' ELSE 'operator.disabled' END,
            'operator', p_id, p_reason);
    RETURN true;
END $$;

-- A new password: the operator themself (authenticated) or an admin.
CREATE FUNCTION headend_operator_set_password(p_id text, p_hash text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE me text := headend_current_operator();
BEGIN
    IF me IS DISTINCT FROM p_id THEN
        me := headend_require_role('admin', 'setting another operator''s password');
    END IF;
    UPDATE operators SET password_hash = p_hash, updated_at = now() WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO audit_log (actor, action, entity, entity_id, reason)
    VALUES (coalesce(me, session_user::text), 'operator.password_changed', 'operator', p_id, 'operators passwd');
    RETURN true;
END $$;

REVOKE EXECUTE ON FUNCTION headend_password_params(text), headend_authenticate(text, text),
    headend_operator_add(text, text, text[], text), headend_operator_set_active(text, boolean, text),
    headend_operator_set_password(text, text), headend_current_operator(), headend_operator_holds(text, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION headend_password_params(text), headend_authenticate(text, text),
    headend_operator_add(text, text, text[], text), headend_operator_set_active(text, boolean, text),
    headend_operator_set_password(text, text), headend_current_operator(), headend_operator_holds(text, text)
    TO headend_daemon, headend_billing;

-- audit_log: every row's actor is the writer's own identity.
CREATE FUNCTION audit_log_check_actor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM headend_check_actor(NEW.actor);
    RETURN NEW;
END $$;
CREATE TRIGGER audit_log_actor BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_check_actor();

-- commands: the creator is the writer; approval by another, authenticated approver; only the daemon
-- moves a command to sent/confirmed/failed or writes its evidence.
ALTER TABLE commands ADD CONSTRAINT commands_operator_is_actor
    CHECK (operator = 'system' OR operator ~ '^[0-9]{1,8}$') NOT VALID;

CREATE FUNCTION commands_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
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
        OR (NEW.evidence, NEW.attempts, NEW.sent_at) IS DISTINCT FROM (OLD.evidence, OLD.attempts, OLD.sent_at))
       AND NOT headend_is_owner() AND NOT headend_is_daemon()
       AND NOT (OLD.cause = 'field' AND OLD.operator IS NOT DISTINCT FROM headend_current_operator()) THEN
        RAISE EXCEPTION 'command %: only the daemon (or, for a field switch, its engineer) sends, confirms or fails a command', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER commands_guard BEFORE INSERT OR UPDATE ON commands FOR EACH ROW EXECUTE FUNCTION commands_guard();

-- protected (保电): clearing it takes an authenticated admin.
CREATE FUNCTION protected_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF OLD.protected AND NOT NEW.protected THEN
        PERFORM headend_require_role('admin', format('clearing protected on %s %s', TG_TABLE_NAME, OLD.id));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER meters_protected_guard BEFORE UPDATE OF protected ON meters
    FOR EACH ROW EXECUTE FUNCTION protected_guard();
CREATE TRIGGER accounts_protected_guard BEFORE UPDATE OF protected ON accounts
    FOR EACH ROW EXECUTE FUNCTION protected_guard();

-- Money: the ledger is append-only and every balance equals the sum of its ledger at commit. Payments and
-- adjustments are written by an authenticated cashier; charges by the daemon's billing service.
CREATE FUNCTION ledger_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger is append-only: % is not allowed', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_no_update_delete BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

CREATE FUNCTION ledger_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF headend_is_owner() THEN
        RETURN NEW;
    END IF;
    IF NEW.kind = 'charge' THEN
        IF NOT headend_is_daemon() THEN
            PERFORM headend_require_role('cashier', 'a charge outside the billing service');
        END IF;
    ELSE
        PERFORM headend_require_role('cashier', format('a %s', NEW.kind));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_writer BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION ledger_guard();

CREATE FUNCTION payments_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT headend_is_owner() THEN
        PERFORM headend_require_role('cashier', 'a payment');
        IF NEW.operator IS DISTINCT FROM headend_current_operator() THEN
            RAISE EXCEPTION 'payment %: operator % is not the operator authenticated on this connection',
                NEW.reference, NEW.operator USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER payments_writer BEFORE INSERT OR UPDATE ON payments FOR EACH ROW EXECUTE FUNCTION payments_guard();

CREATE FUNCTION balances_match_ledger() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE total numeric;
BEGIN
    IF headend_is_owner() THEN
        RETURN NULL;
    END IF;
    SELECT coalesce(sum(amount), 0) INTO total FROM ledger WHERE account_id = NEW.account_id;
    IF (SELECT balance FROM balances WHERE account_id = NEW.account_id) IS DISTINCT FROM total THEN
        RAISE EXCEPTION 'balance of account %: % is not the sum of its ledger (%); balances change only with a ledger entry',
            NEW.account_id, NEW.balance, total USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER balances_match_ledger AFTER INSERT OR UPDATE ON balances
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION balances_match_ledger();

-- Settings (e.g. the latched cap halt): the operators' desk login may lift a halt as an authenticated admin.
CREATE FUNCTION settings_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT headend_is_owner() AND NOT headend_is_daemon() THEN
        PERFORM headend_require_role('admin', format('changing setting %s', OLD.key));
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER settings_guard BEFORE UPDATE OR DELETE ON headend_settings
    FOR EACH ROW EXECUTE FUNCTION settings_guard();
GRANT DELETE ON headend_settings TO headend_billing;

-- The daemon runs fee control (arrears flags, commands, the cap halt) and prepaid billing (charges).
GRANT UPDATE (arrears, arrears_since, notice_sent_at, updated_at) ON accounts TO headend_daemon;
GRANT INSERT ON ledger, bills TO headend_daemon;
GRANT INSERT, UPDATE ON balances TO headend_daemon;
GRANT INSERT, DELETE ON headend_settings TO headend_daemon;
-- Billing cannot rewrite money history or delete anything.
REVOKE UPDATE ON ledger, payments FROM headend_billing;
REVOKE DELETE, TRUNCATE ON ledger, payments, balances, commands, readings FROM PUBLIC, headend_billing, headend_daemon;
