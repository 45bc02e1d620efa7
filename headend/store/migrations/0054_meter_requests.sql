-- Meter requests (issue 23): an on-demand read (点抄) or a re-collection of a range of intervals (补抄)
-- of one meter, asked by a signed-in operator at the desk (CLI, web console) and answered by the
-- daemon whose engine reads the meter's channel (headend.requests.duty).
--
-- * kind 'read' asks for `quantities` (NULL: the meter's read plan); kind 'recollect' for the
--   intervals in [range_from, range_to) that hold no reading, from the meter's load profile / freezes.
-- * Inserted only by a signed-in operator holding `operator` (or the schema owner), as themselves, in
--   state 'requested'. The channel is the meter's, set here. Nobody deletes one.
-- * Bounded here, whoever inserts: at most `requests.per_operator` open (requested or running)
--   requests per operator and `requests.per_channel` per channel, a re-collection at most
--   `requests.max_range_days` long (headend_settings, published by the daemon from [requests]; the
--   defaults below until it does). A refusal names its bound.
-- * state: requested -> running -> done | failed, requested -> expired | cancelled. Only the daemon
--   claims (running), finishes (done, failed) and expires; the requester (or an admin) cancels one not
--   claimed yet. Every column but state, reason, result, counts and times is fixed at insert; a final
--   state is final.
-- * Every insert and state change is in audit_log (action 'meter_request.<state>') and notified on
--   headend_meter_requests (payload: '<id> <state>').

INSERT INTO headend_settings (key, value) VALUES
    ('requests.per_operator', '5'),
    ('requests.per_channel', '20'),
    ('requests.max_range_days', '31')
ON CONFLICT (key) DO NOTHING;

CREATE TABLE meter_requests (
    id bigserial PRIMARY KEY,
    meter_id integer NOT NULL REFERENCES meters (id),
    channel_id integer NOT NULL REFERENCES channels (id),
    kind text NOT NULL CHECK (kind IN ('read', 'recollect')),
    requested_by text NOT NULL REFERENCES operators (id),
    quantities text[] CHECK (
        cardinality(quantities) BETWEEN 1 AND 32
        AND array_position(quantities, NULL) IS NULL
        AND array_to_string(quantities, ',') ~ '^[a-z][a-z0-9_]{0,62}(,[a-z][a-z0-9_]{0,62})*$'),
    range_from timestamptz,
    range_to timestamptz,
    state text NOT NULL DEFAULT 'requested'
        CHECK (state IN ('requested', 'running', 'done', 'failed', 'expired', 'cancelled')),
    reason text,
    result jsonb CHECK (jsonb_typeof(result) = 'object'),
    filled integer CHECK (filled >= 0),
    missing integer CHECK (missing >= 0),
    requested_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    CHECK ((kind = 'recollect') = (range_from IS NOT NULL AND range_to IS NOT NULL)),
    CHECK (kind = 'read' OR quantities IS NULL),
    CHECK (range_to > range_from),
    CHECK (expires_at > requested_at AND expires_at <= requested_at + interval '1 day')
);
CREATE INDEX meter_requests_open_idx ON meter_requests (channel_id, id) WHERE state IN ('requested', 'running');
CREATE INDEX meter_requests_operator_open_idx ON meter_requests (requested_by) WHERE state IN ('requested', 'running');
CREATE INDEX meter_requests_meter_idx ON meter_requests (meter_id, id);

-- A bound on meter requests ('per_operator', 'per_channel', 'max_range_days'): the daemon's published
-- [requests] value, else the default above (SECURITY DEFINER: the desk need not read the settings).
CREATE FUNCTION headend_request_limit(p_key text) RETURNS integer LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
    SELECT coalesce((SELECT value::integer FROM headend_settings WHERE key = 'requests.' || p_key),
                    CASE p_key WHEN 'per_operator' THEN 5 WHEN 'per_channel' THEN 20 ELSE 31 END)
$$;

CREATE FUNCTION meter_requests_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    me text;
    bound integer;
    open_count integer;
BEGIN
    IF TG_OP = 'INSERT' THEN
        me := headend_require_role('operator', 'a meter request');
        IF NOT headend_is_owner() AND NEW.requested_by IS DISTINCT FROM me THEN
            RAISE EXCEPTION 'meter request: requested_by % is not the signed-in operator', NEW.requested_by
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.state <> 'requested' OR NEW.started_at IS NOT NULL OR NEW.finished_at IS NOT NULL
           OR NEW.reason IS NOT NULL OR NEW.result IS NOT NULL OR NEW.filled IS NOT NULL
           OR NEW.missing IS NOT NULL THEN
            RAISE EXCEPTION 'meter request: a new request is requested, nothing more'
                USING ERRCODE = 'check_violation';
        END IF;
        SELECT channel_id INTO NEW.channel_id FROM meters WHERE id = NEW.meter_id;
        IF NEW.channel_id IS NULL THEN
            RAISE EXCEPTION 'meter request: no meter with id %', NEW.meter_id USING ERRCODE = 'foreign_key_violation';
        END IF;
        bound := headend_request_limit('max_range_days');
        IF NEW.kind = 'recollect' AND NEW.range_to - NEW.range_from > make_interval(days => bound) THEN
            RAISE EXCEPTION 'meter request: a re-collection covers at most % days ([requests] max_range_days), this one %',
                bound, NEW.range_to - NEW.range_from USING ERRCODE = 'check_violation';
        END IF;
        -- one insert at a time, so that two at once cannot both pass a bound
        PERFORM pg_advisory_xact_lock(hashtext('headend.meter_requests'));
        bound := headend_request_limit('per_operator');
        SELECT count(*) INTO open_count FROM meter_requests
        WHERE requested_by = NEW.requested_by AND state IN ('requested', 'running');
        IF open_count >= bound THEN
            RAISE EXCEPTION 'meter request: operator % already has % open request(s), at most % ([requests] per_operator)',
                NEW.requested_by, open_count, bound USING ERRCODE = 'check_violation';
        END IF;
        bound := headend_request_limit('per_channel');
        SELECT count(*) INTO open_count FROM meter_requests
        WHERE channel_id = NEW.channel_id AND state IN ('requested', 'running');
        IF open_count >= bound THEN
            RAISE EXCEPTION 'meter request: channel % already has % open request(s), at most % ([requests] per_channel)',
                (SELECT name FROM channels WHERE id = NEW.channel_id), open_count, bound
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.requested_at := now();
        RETURN NEW;
    END IF;
    IF (NEW.meter_id, NEW.channel_id, NEW.kind, NEW.requested_by, NEW.quantities, NEW.range_from, NEW.range_to,
        NEW.requested_at, NEW.expires_at)
       IS DISTINCT FROM
       (OLD.meter_id, OLD.channel_id, OLD.kind, OLD.requested_by, OLD.quantities, OLD.range_from, OLD.range_to,
        OLD.requested_at, OLD.expires_at) THEN
        RAISE EXCEPTION 'meter request %: only its state and outcome change', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT ((OLD.state = 'requested' AND NEW.state IN ('running', 'expired', 'cancelled'))
            OR (OLD.state = 'running' AND NEW.state IN ('done', 'failed'))) THEN
        RAISE EXCEPTION 'meter request %: transition % -> % is not allowed', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.state = 'cancelled' THEN
        IF NOT headend_is_owner() AND OLD.requested_by IS DISTINCT FROM headend_current_operator() THEN
            PERFORM headend_require_role('admin', format('cancelling meter request %s of operator %s', OLD.id, OLD.requested_by));
        END IF;
    ELSIF NOT headend_is_owner() AND NOT headend_is_daemon() THEN
        RAISE EXCEPTION 'meter request %: only the daemon moves it to %', OLD.id, NEW.state
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.state = 'running' THEN
        NEW.started_at := now();
    ELSE
        NEW.finished_at := now();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER meter_requests_guard BEFORE INSERT OR UPDATE ON meter_requests
    FOR EACH ROW EXECUTE FUNCTION meter_requests_guard();

CREATE FUNCTION meter_requests_audit() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO audit_log (actor, action, entity, entity_id, reason, details)
        VALUES (
            coalesce(headend_current_operator(), CASE WHEN headend_is_daemon() THEN 'system' END, NEW.requested_by),
            'meter_request.' || NEW.state,
            'meter_request',
            NEW.id::text,
            coalesce(NEW.reason, NEW.kind),
            jsonb_build_object(
                'meter_id', NEW.meter_id, 'channel_id', NEW.channel_id, 'kind', NEW.kind,
                'requested_by', NEW.requested_by, 'quantities', NEW.quantities,
                'from', CASE WHEN TG_OP = 'UPDATE' THEN OLD.state END, 'to', NEW.state,
                'range_from', NEW.range_from, 'range_to', NEW.range_to,
                'filled', NEW.filled, 'missing', NEW.missing));
        PERFORM pg_notify('headend_meter_requests', NEW.id::text || ' ' || NEW.state);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER meter_requests_audit AFTER INSERT OR UPDATE ON meter_requests
    FOR EACH ROW EXECUTE FUNCTION meter_requests_audit();

REVOKE ALL ON meter_requests FROM PUBLIC;
GRANT SELECT ON meter_requests TO headend_daemon, headend_billing, headend_reporting;
GRANT INSERT ON meter_requests TO headend_billing;
GRANT UPDATE ON meter_requests TO headend_daemon, headend_billing;
GRANT USAGE ON SEQUENCE meter_requests_id_seq TO headend_billing;
