-- Every table that decides money or a relay is written only through guarded paths (issue 21): the
-- login's group role, the signed-in operator (or, for the daemon login only, a machine actor), the
-- state machine, and an audit row naming who. tests/store/test_write_matrix.py tries every cell of
-- the declaration of who may do what against these rules.
--
-- * Sign-in no longer reads pg_stat_activity (a schema owner without pg_read_all_stats saw no
--   backend_start of another login's session, so no desk login could sign in): a session is this
--   backend plus a random nonce kept in the session's own setting headend.session, which no other
--   backend can read, so a backend that later reuses the pid inherits nothing.
-- * Machine actors are 'system' (automation) and 'executor' (the command runner), from the daemon's
--   login only: no audit row under 'admin' or any other invented name.
-- * commands: the schedule (next_attempt_at) is the daemon's, or a field command's own engineer's;
--   cancelling takes a signed-in operator (or admin); nothing is sent that waits for its approval or
--   is a dry run; a confirmation carries a read-back showing the relay where the action puts it.
-- * A human's disconnects follow the two-person rule of automation: beyond the setting
--   safety.manual_approval_above (10 unless set) created by one operator within an hour, each waits
--   for an approver.
-- * ledger: a charge is never a credit. bills: issued by the daemon or a cashier, each with its
--   ledger charge; only paid_at changes, once, and only when the account's money covers the bills
--   it settles. balances: written by the daemon or a cashier. meter_replacements: an admin's.

GRANT SELECT ON meter_replacements TO headend_daemon, headend_billing;

-- Sessions: pid + nonce.
ALTER TABLE operator_sessions ADD COLUMN nonce text;
DELETE FROM operator_sessions;  -- sessions of the old scheme end: sign in again

CREATE FUNCTION headend_bind_session(p_operator text, p_roles text[]) RETURNS void LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE n text := gen_random_uuid()::text;
BEGIN
    DELETE FROM operator_sessions WHERE backend_pid = pg_backend_pid();
    INSERT INTO operator_sessions (backend_pid, backend_start, operator_id, roles, nonce)
    VALUES (pg_backend_pid(), now(), p_operator, p_roles, n);
    PERFORM set_config('headend.session', n, false);
END $$;
REVOKE EXECUTE ON FUNCTION headend_bind_session(text, text[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION headend_current_operator() RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
    SELECT s.operator_id FROM operator_sessions s JOIN operators o ON o.id = s.operator_id AND o.active
    WHERE s.backend_pid = pg_backend_pid() AND s.nonce = current_setting('headend.session', true)
$$;

CREATE OR REPLACE FUNCTION headend_session_allows(p_role text) RETURNS boolean LANGUAGE sql STABLE
    SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce((SELECT s.roles IS NULL OR p_role = ANY (s.roles) FROM operator_sessions s
                     WHERE s.backend_pid = pg_backend_pid()
                       AND s.nonce = current_setting('headend.session', true)),
                    false)
$$;

CREATE OR REPLACE FUNCTION headend_sign_in(p_operator text, p_proof text, OUT roles text[], OUT refused text)
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
    PERFORM headend_bind_session(p_operator, NULL);
    roles := op.roles;
END $$;

CREATE OR REPLACE FUNCTION headend_sign_in_token(p_operator text, p_digest text, OUT roles text[], OUT refused text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    tok operator_tokens%ROWTYPE;
    held text[];
BEGIN
    SELECT t.* INTO tok FROM operator_tokens t WHERE t.digest = p_digest AND t.operator_id = p_operator;
    SELECT o.roles INTO held FROM operators o WHERE o.id = p_operator AND o.active;
    IF tok.id IS NULL OR held IS NULL THEN
        refused := 'unknown token, or a disabled operator';
        RETURN;
    END IF;
    IF tok.revoked_at IS NOT NULL THEN
        refused := format('token %s (%s) was revoked', tok.id, tok.label);
        RETURN;
    END IF;
    IF tok.expires_at <= now() THEN
        refused := format('token %s (%s) expired at %s', tok.id, tok.label,
                          to_char(tok.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'));
        RETURN;
    END IF;
    roles := ARRAY(SELECT r FROM unnest(tok.roles) AS r WHERE r = ANY (held));
    IF cardinality(roles) = 0 THEN
        refused := format('token %s (%s): the operator holds none of its roles any more', tok.id, tok.label);
        roles := NULL;
        RETURN;
    END IF;
    UPDATE operator_tokens SET last_used_at = now() WHERE id = tok.id;
    PERFORM headend_bind_session(p_operator, roles);
END $$;

-- Machine actors: a fixed set, from the daemon's login only.
CREATE OR REPLACE FUNCTION headend_check_actor(p_actor text) RETURNS void LANGUAGE plpgsql STABLE
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
    ELSIF p_actor IS NULL OR p_actor NOT IN ('system', 'executor') THEN
        RAISE EXCEPTION 'actor %: not a machine actor (system, executor) nor an operator id', p_actor
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- How many disconnects one operator creates within an hour before each needs an approver.
CREATE FUNCTION headend_manual_approval_above() RETURNS integer LANGUAGE sql STABLE
    SET search_path = pg_catalog, public AS $$
    SELECT coalesce((SELECT value::integer FROM headend_settings WHERE key = 'safety.manual_approval_above'), 10)
$$;

CREATE FUNCTION commands_two_person() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.action = 'disconnect' AND NEW.operator ~ '^[0-9]{1,8}$' AND NOT NEW.requires_approval
       AND (SELECT count(*) FROM commands c WHERE c.operator = NEW.operator AND c.action = 'disconnect'
                                              AND c.created_at > now() - interval '1 hour')
           >= headend_manual_approval_above() THEN
        NEW.requires_approval := true;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER commands_two_person BEFORE INSERT ON commands
    FOR EACH ROW EXECUTE FUNCTION commands_two_person();

CREATE FUNCTION commands_flow_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    me text;
    seen jsonb := NEW.evidence -> 'state';
BEGIN
    IF headend_is_owner() THEN
        RETURN NEW;
    END IF;
    me := headend_current_operator();
    IF NEW.next_attempt_at IS DISTINCT FROM OLD.next_attempt_at AND NOT headend_is_daemon()
       AND NOT (OLD.cause = 'field' AND OLD.operator IS NOT DISTINCT FROM me) THEN
        RAISE EXCEPTION 'command %: only the daemon (or a field command''s engineer) reschedules a command', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.state = 'cancelled' AND OLD.state <> 'cancelled' AND NOT headend_is_daemon()
       AND NOT (headend_operator_holds(me, 'operator') OR headend_operator_holds(me, 'admin')) THEN
        RAISE EXCEPTION 'cancelling command % needs an authenticated operator with the operator role', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.state = 'sent' AND OLD.state <> 'sent' THEN
        IF OLD.requires_approval AND OLD.approved_by IS NULL THEN
            RAISE EXCEPTION 'command %: it waits for an approver and is not sent before', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF OLD.dry_run THEN
            RAISE EXCEPTION 'command %: a dry run is never sent', OLD.id USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    IF NEW.state = 'confirmed' AND OLD.state <> 'confirmed' AND NOT coalesce(CASE
        WHEN jsonb_typeof(seen) <> 'object' THEN false
        WHEN NEW.action = 'disconnect' THEN seen -> 'open' = 'true'::jsonb
        WHEN NEW.reconnect_mode = 'close_allowed' THEN seen -> 'command_open' = 'false'::jsonb
        ELSE seen -> 'open' = 'false'::jsonb END, false) THEN
        RAISE EXCEPTION 'command %: confirmed only with a read-back that shows the relay %', OLD.id,
            CASE WHEN NEW.action = 'disconnect' THEN 'open' ELSE 'closed (or close allowed)' END
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER commands_flow_guard BEFORE UPDATE ON commands
    FOR EACH ROW EXECUTE FUNCTION commands_flow_guard();

-- Money.
CREATE FUNCTION ledger_charge_is_a_debit() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.kind = 'charge' AND NEW.amount > 0 AND NOT headend_is_owner() THEN
        RAISE EXCEPTION 'a charge of % is a credit: credits are a cashier''s adjustments', NEW.amount
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_charge_is_a_debit BEFORE INSERT ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_charge_is_a_debit();

CREATE FUNCTION money_writer_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT headend_is_owner() AND NOT headend_is_daemon() THEN
        PERFORM headend_require_role('cashier', format('writing %s', TG_TABLE_NAME));
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER balances_writer BEFORE INSERT OR UPDATE ON balances
    FOR EACH ROW EXECUTE FUNCTION money_writer_guard();
CREATE TRIGGER bills_writer BEFORE INSERT OR UPDATE OR DELETE ON bills
    FOR EACH ROW EXECUTE FUNCTION money_writer_guard();

CREATE FUNCTION bills_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF headend_is_owner() THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.paid_at IS NOT NULL THEN
            RAISE EXCEPTION 'a bill is issued unpaid' USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    IF (NEW.id, NEW.account_id, NEW.period_start, NEW.period_end, NEW.consumption, NEW.amount, NEW.due_at,
        NEW.created_at)
       IS DISTINCT FROM (OLD.id, OLD.account_id, OLD.period_start, OLD.period_end, OLD.consumption,
                         OLD.amount, OLD.due_at, OLD.created_at)
       OR (NEW.paid_at IS DISTINCT FROM OLD.paid_at AND (OLD.paid_at IS NOT NULL OR NEW.paid_at IS NULL)) THEN
        RAISE EXCEPTION 'bill %: only its settlement (paid_at, once) changes', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER bills_guard BEFORE INSERT OR UPDATE ON bills FOR EACH ROW EXECUTE FUNCTION bills_guard();

-- At commit: a new bill has its ledger charge; settled bills are covered by the account's money.
CREATE FUNCTION bills_match_money() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE covered numeric;
BEGIN
    IF headend_is_owner() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' AND NOT EXISTS (
        SELECT 1 FROM ledger WHERE idempotency_key = 'bill:' || NEW.id AND account_id = NEW.account_id
                               AND kind = 'charge' AND amount = -NEW.amount) THEN
        RAISE EXCEPTION 'bill %: issued without its ledger charge (bill:%)', NEW.id, NEW.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.paid_at IS DISTINCT FROM OLD.paid_at THEN
        SELECT coalesce((SELECT balance FROM balances WHERE account_id = NEW.account_id), 0)
               + coalesce((SELECT sum(amount) FROM bills WHERE account_id = NEW.account_id AND paid_at IS NULL), 0)
          INTO covered;
        IF covered < 0 THEN
            RAISE EXCEPTION 'bill %: the money of account % does not cover the bills marked paid (short by %)',
                NEW.id, NEW.account_id, -covered USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER bills_match_money AFTER INSERT OR UPDATE ON bills
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bills_match_money();

REVOKE UPDATE ON bills FROM headend_billing;
GRANT UPDATE (paid_at) ON bills TO headend_billing;

-- A replacement moves the old meter's account to the new one: an admin's, under their own id. Ending an
-- assignment is the writing admin's act whoever opened it (the opener's id stays on the row).
CREATE OR REPLACE FUNCTION billing_records_guard() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public AS $$
BEGIN
    IF headend_is_owner() THEN
        RETURN NEW;
    END IF;
    PERFORM headend_require_role('admin', format('writing %s', TG_TABLE_NAME));
    IF TG_OP = 'INSERT' THEN
        PERFORM headend_check_actor(NEW.operator);
    ELSIF (NEW.id, NEW.meter_id, NEW.account_id, NEW.effective_from, NEW.operator, NEW.created_at)
          IS DISTINCT FROM (OLD.id, OLD.meter_id, OLD.account_id, OLD.effective_from, OLD.operator, OLD.created_at)
       OR OLD.effective_to IS NOT NULL THEN  -- meter_assignments only (restarts are never updated)
        RAISE EXCEPTION 'assignment %: only its end may be set, once', OLD.id USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER meter_replacements_writer BEFORE INSERT ON meter_replacements
    FOR EACH ROW EXECUTE FUNCTION billing_records_guard();
REVOKE UPDATE, DELETE, TRUNCATE ON meter_replacements FROM PUBLIC, headend_daemon, headend_billing;
