-- Exceptions (异常): what the daemon's rules found on a meter or a transformer area, handed to someone
-- until closed (发现 → 派工 → 处理 → 归档). One exception per (rule, meter) or (rule, area) is active at a
-- time: the daemon counts each pass that sees the condition again (count, last_seen, the latest evidence)
-- instead of opening another. States: open → acknowledged → dispatched (to a named person or crew) →
-- resolved (with a note), or auto_closed by the daemon once the condition has been clear for the
-- configured time (clear_since). Every transition is a compare-and-set by the caller and is checked
-- here: the daemon login opens, counts and auto-closes, never acknowledges, dispatches or resolves; an
-- authenticated operator with the operator or admin role does those three under their own id; nobody
-- rewrites what was found or deletes it. Each opening and each transition goes to the audit log.

CREATE TABLE exceptions (
    id              bigserial PRIMARY KEY,
    rule            text NOT NULL CHECK (rule IN (
        'register_backwards', 'meter_stopped', 'reverse_energy', 'voltage_loss', 'current_imbalance',
        'consumption_spike', 'clock_offset', 'tamper', 'no_read',
        'loss_above_limit', 'negative_loss', 'loss_jump')),
    meter_id        integer REFERENCES meters (id),
    area_id         integer REFERENCES areas (id),
    state           text NOT NULL DEFAULT 'open'
        CHECK (state IN ('open', 'acknowledged', 'dispatched', 'resolved', 'auto_closed')),
    count           integer NOT NULL DEFAULT 1 CHECK (count >= 1),
    first_seen      timestamptz NOT NULL,
    last_seen       timestamptz NOT NULL,
    evidence        jsonb NOT NULL DEFAULT '{}'::jsonb,  -- the values that triggered it, latest pass
    clear_since     timestamptz,                         -- the first pass that no longer saw it
    acknowledged_by text,
    acknowledged_at timestamptz,
    dispatched_to   text,
    dispatched_by   text,
    dispatched_at   timestamptz,
    resolved_by     text,
    note            text,
    closed_at       timestamptz,
    CHECK ((meter_id IS NULL) <> (area_id IS NULL)),
    CHECK (last_seen >= first_seen),
    CHECK ((state IN ('resolved', 'auto_closed')) = (closed_at IS NOT NULL))
);
CREATE UNIQUE INDEX exceptions_active_meter ON exceptions (rule, meter_id)
    WHERE meter_id IS NOT NULL AND state IN ('open', 'acknowledged', 'dispatched');
CREATE UNIQUE INDEX exceptions_active_area ON exceptions (rule, area_id)
    WHERE area_id IS NOT NULL AND state IN ('open', 'acknowledged', 'dispatched');
CREATE INDEX exceptions_state ON exceptions (state, first_seen);

CREATE FUNCTION exceptions_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    me text := headend_current_operator();
    trusted boolean := headend_is_owner();
    machine boolean := headend_is_daemon() AND headend_current_operator() IS NULL;
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF NOT trusted THEN
            RAISE EXCEPTION 'exception %: kept for the record, never deleted', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN OLD;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NOT (trusted OR machine) THEN
            RAISE EXCEPTION 'only the daemon opens an exception' USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.state <> 'open' OR num_nonnulls(NEW.acknowledged_by, NEW.dispatched_to, NEW.resolved_by,
                                               NEW.note, NEW.closed_at, NEW.clear_since) > 0 THEN
            RAISE EXCEPTION 'an exception is opened, nothing more' USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    IF (NEW.id, NEW.rule, NEW.meter_id, NEW.area_id, NEW.first_seen)
       IS DISTINCT FROM (OLD.id, OLD.rule, OLD.meter_id, OLD.area_id, OLD.first_seen) THEN
        RAISE EXCEPTION 'exception %: what was found, where and when is fixed', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.state IN ('resolved', 'auto_closed') AND NOT trusted THEN
        RAISE EXCEPTION 'exception %: % is final', OLD.id, OLD.state USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (NEW.count, NEW.last_seen, NEW.evidence, NEW.clear_since)
       IS DISTINCT FROM (OLD.count, OLD.last_seen, OLD.evidence, OLD.clear_since)
       AND NOT (trusted OR machine) THEN
        RAISE EXCEPTION 'exception %: only the daemon records what its rules see', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.state = 'auto_closed' AND OLD.state <> 'auto_closed' THEN
        IF NOT (trusted OR machine) THEN
            RAISE EXCEPTION 'exception %: only the daemon closes an exception by itself', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.clear_since IS NULL THEN
            RAISE EXCEPTION 'exception %: closed automatically only once its condition is clear', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    ELSIF NEW.state IS DISTINCT FROM OLD.state
          OR (NEW.acknowledged_by, NEW.acknowledged_at, NEW.dispatched_to, NEW.dispatched_by, NEW.dispatched_at,
              NEW.resolved_by, NEW.note)
             IS DISTINCT FROM (OLD.acknowledged_by, OLD.acknowledged_at, OLD.dispatched_to, OLD.dispatched_by,
                               OLD.dispatched_at, OLD.resolved_by, OLD.note) THEN
        IF NOT trusted AND (me IS NULL
                            OR NOT (headend_operator_holds(me, 'operator') OR headend_operator_holds(me, 'admin'))) THEN
            RAISE EXCEPTION 'exception %: acknowledging, dispatching and resolving need an authenticated operator with the operator or admin role', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF (OLD.state, NEW.state) NOT IN (('open', 'acknowledged'), ('acknowledged', 'dispatched'),
                                          ('acknowledged', 'resolved'), ('dispatched', 'resolved')) THEN
            RAISE EXCEPTION 'exception %: no way from % to %', OLD.id, OLD.state, NEW.state
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.state = 'acknowledged' AND (NEW.acknowledged_at IS NULL OR NEW.acknowledged_by IS NULL
                                           OR (NOT trusted AND NEW.acknowledged_by IS DISTINCT FROM me)) THEN
            RAISE EXCEPTION 'exception %: acknowledged by the operator signed in, with the time', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.state = 'dispatched' AND (coalesce(btrim(NEW.dispatched_to), '') = '' OR NEW.dispatched_at IS NULL
                                         OR NEW.dispatched_by IS NULL
                                         OR (NOT trusted AND NEW.dispatched_by IS DISTINCT FROM me)) THEN
            RAISE EXCEPTION 'exception %: dispatched to a named person or crew by the operator signed in', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.state = 'resolved' AND (coalesce(btrim(NEW.note), '') = '' OR NEW.resolved_by IS NULL
                                       OR (NOT trusted AND NEW.resolved_by IS DISTINCT FROM me)) THEN
            RAISE EXCEPTION 'exception %: resolved with a note by the operator signed in', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.state <> 'resolved' AND NEW.note IS DISTINCT FROM OLD.note THEN
            RAISE EXCEPTION 'exception %: the note is the resolution''s', OLD.id USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER exceptions_guard BEFORE INSERT OR UPDATE OR DELETE ON exceptions
    FOR EACH ROW EXECUTE FUNCTION exceptions_guard();

-- The audit trail: the opening and every change of state, under who did it: the signed-in operator, else
-- the transaction's headend.actor ('system' for the daemon's rules pass), else 'system' for a daemon login,
-- else the login (the schema owner).
CREATE FUNCTION exceptions_audit() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE who text := coalesce(headend_current_operator(), nullif(current_setting('headend.actor', true), ''),
                             CASE WHEN headend_is_daemon() THEN 'system' ELSE session_user::text END);
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO audit_log (actor, action, entity, entity_id, reason, details)
        VALUES (who, 'exception.' || NEW.state, 'exception', NEW.id::text,
                coalesce(CASE NEW.state WHEN 'dispatched' THEN NEW.dispatched_to WHEN 'resolved' THEN NEW.note END,
                         NEW.rule),
                jsonb_build_object('rule', NEW.rule, 'meter_id', NEW.meter_id, 'area_id', NEW.area_id,
                                   'count', NEW.count, 'evidence', NEW.evidence));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER exceptions_audit AFTER INSERT OR UPDATE ON exceptions
    FOR EACH ROW EXECUTE FUNCTION exceptions_audit();

GRANT SELECT ON exceptions TO headend_daemon, headend_billing, headend_reporting;
GRANT INSERT, UPDATE ON exceptions TO headend_daemon;
GRANT UPDATE ON exceptions TO headend_billing;
GRANT USAGE ON SEQUENCE exceptions_id_seq TO headend_daemon;
