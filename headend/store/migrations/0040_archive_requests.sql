-- Archive requests (issue 22): `headend concentrator archive push` reaches a dial-in concentrator
-- through the running daemon, which holds its connection. The desk inserts a request; the active
-- daemon claims it, works it on the held, verified connection and records the outcome.
--
-- * kind 'read' queries the archive (AFN 0A F10) and records the diff with `wanted` (the inventory's
--   records as the desk saw them); kind 'push' also carries the rows to write and delete that the
--   operator was shown and agreed to: the daemon sends them (AFN 04 F10) only while the archive still
--   differs from `wanted` exactly so, then reads the archive back.
-- * Inserted only by a signed-in operator holding `operator` (or the schema owner), as themselves,
--   in state 'requested'. Nobody deletes one.
-- * state: requested -> running -> done | failed, requested -> expired (nothing sent); only the
--   daemon claims and finishes; the daemon or the requesting operator expires one. Every column but
--   state, claimed/finished times, result and outcome is fixed at insert; a final state is final.
-- * Every insert and state change is in audit_log (action 'archive_request.<state>') and notified on
--   the channel headend_archive_requests (payload: the id).

CREATE TABLE archive_requests (
    id bigserial PRIMARY KEY,
    channel_id integer NOT NULL REFERENCES channels (id),
    kind text NOT NULL CHECK (kind IN ('read', 'push')),
    requested_by text NOT NULL REFERENCES operators (id),
    wanted jsonb NOT NULL CHECK (jsonb_typeof(wanted) = 'array'),
    writes jsonb CHECK (jsonb_typeof(writes) = 'array'),
    deletes jsonb CHECK (jsonb_typeof(deletes) = 'array'),
    state text NOT NULL DEFAULT 'requested'
        CHECK (state IN ('requested', 'running', 'done', 'failed', 'expired')),
    result text,
    outcome jsonb,
    requested_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    CHECK ((kind = 'push') = (writes IS NOT NULL AND deletes IS NOT NULL)),
    CHECK (expires_at > requested_at AND expires_at <= requested_at + interval '1 day')
);
CREATE INDEX archive_requests_open_idx ON archive_requests (channel_id, id) WHERE state IN ('requested', 'running');

CREATE FUNCTION archive_requests_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE me text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        me := headend_require_role('operator', 'an archive request');
        IF NOT headend_is_owner() AND NEW.requested_by IS DISTINCT FROM me THEN
            RAISE EXCEPTION 'archive request: requested_by % is not the signed-in operator', NEW.requested_by
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.state <> 'requested' OR NEW.started_at IS NOT NULL OR NEW.finished_at IS NOT NULL
           OR NEW.result IS NOT NULL OR NEW.outcome IS NOT NULL THEN
            RAISE EXCEPTION 'archive request: a new request is requested, nothing more'
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.requested_at := now();
        RETURN NEW;
    END IF;
    IF (NEW.channel_id, NEW.kind, NEW.requested_by, NEW.wanted, NEW.writes, NEW.deletes, NEW.requested_at,
        NEW.expires_at)
       IS DISTINCT FROM
       (OLD.channel_id, OLD.kind, OLD.requested_by, OLD.wanted, OLD.writes, OLD.deletes, OLD.requested_at,
        OLD.expires_at) THEN
        RAISE EXCEPTION 'archive request %: only its state and outcome change', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT ((OLD.state = 'requested' AND NEW.state IN ('running', 'expired'))
            OR (OLD.state = 'running' AND NEW.state IN ('done', 'failed'))) THEN
        RAISE EXCEPTION 'archive request %: transition % -> % is not allowed', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    IF NOT headend_is_owner() AND NOT headend_is_daemon()
       AND NOT (NEW.state = 'expired' AND OLD.requested_by = headend_current_operator()) THEN
        RAISE EXCEPTION 'archive request %: only the daemon (or its requester, to expire it) moves it to %',
            OLD.id, NEW.state USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.state = 'running' THEN
        NEW.started_at := now();
    ELSE
        NEW.finished_at := now();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER archive_requests_guard BEFORE INSERT OR UPDATE ON archive_requests
    FOR EACH ROW EXECUTE FUNCTION archive_requests_guard();

CREATE FUNCTION archive_requests_audit() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO audit_log (actor, action, entity, entity_id, reason, details)
        VALUES (
            coalesce(headend_current_operator(), CASE WHEN headend_is_daemon() THEN 'system' END, NEW.requested_by),
            'archive_request.' || NEW.state,
            'archive_request',
            NEW.id::text,
            coalesce(NEW.result, NEW.kind),
            jsonb_build_object(
                'channel_id', NEW.channel_id, 'kind', NEW.kind, 'requested_by', NEW.requested_by,
                'from', CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END, 'to', NEW.state,
                'writes', NEW.writes, 'deletes', NEW.deletes, 'outcome', NEW.outcome));
    END IF;
    PERFORM pg_notify('headend_archive_requests', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER archive_requests_audit AFTER INSERT OR UPDATE ON archive_requests
    FOR EACH ROW EXECUTE FUNCTION archive_requests_audit();

REVOKE ALL ON archive_requests FROM PUBLIC;
GRANT SELECT ON archive_requests TO headend_daemon, headend_billing, headend_reporting;
GRANT INSERT, UPDATE ON archive_requests TO headend_daemon, headend_billing;
GRANT USAGE ON SEQUENCE archive_requests_id_seq TO headend_daemon, headend_billing;
