-- Time-of-use download campaigns (issue 25): a parameter set and a switch time for a list of meters,
-- created by an operator, approved by a different approver, started, paused or cancelled by an
-- operator, and run by the daemon (the only login that records what happened at a meter). The daemon
-- may touch a meter of a campaign only while the campaign is approved and running.
CREATE TABLE tou_campaigns (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    set_id      integer NOT NULL REFERENCES tou_parameter_sets(id),
    switch_at   timestamptz NOT NULL,
    state       text NOT NULL DEFAULT 'draft'
                CHECK (state IN ('draft', 'approved', 'running', 'paused', 'done', 'cancelled')),
    max_attempts integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 10),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    approved_by text,
    approved_at timestamptz,
    dry_run_requested_at timestamptz,  -- an operator asked the daemon to read and compare, no writes
    CHECK ((approved_by IS NULL) = (approved_at IS NULL)),
    CHECK (approved_by IS DISTINCT FROM created_by),
    CHECK (state IN ('draft', 'cancelled') OR approved_by IS NOT NULL)
);

CREATE TABLE tou_campaign_meters (
    campaign_id integer NOT NULL REFERENCES tou_campaigns(id),
    meter_id    integer NOT NULL REFERENCES meters(id),
    state       text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'written', 'verified', 'failed', 'skipped')),
    reason      text,
    attempts    integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_try_at timestamptz NOT NULL DEFAULT '-infinity',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    dry_run     jsonb,        -- what a write would change (item -> [current, wanted]) or {"error": ...}
    dry_run_at  timestamptz,
    PRIMARY KEY (campaign_id, meter_id),
    CHECK ((state = 'failed') = (reason IS NOT NULL))
);
CREATE INDEX tou_campaign_meters_due ON tou_campaign_meters (campaign_id, next_try_at)
    WHERE state IN ('pending', 'written');

GRANT SELECT ON tou_campaigns, tou_campaign_meters TO headend_daemon, headend_billing, headend_reporting;
GRANT INSERT, UPDATE ON tou_campaigns TO headend_billing;
GRANT UPDATE (state) ON tou_campaigns TO headend_daemon;
GRANT INSERT ON tou_campaign_meters TO headend_billing;
GRANT UPDATE (state, reason, attempts, next_try_at, updated_at, dry_run, dry_run_at) ON tou_campaign_meters
    TO headend_daemon;
GRANT USAGE ON SEQUENCE tou_campaigns_id_seq TO headend_billing;
REVOKE DELETE, TRUNCATE ON tou_campaigns, tou_campaign_meters FROM PUBLIC, headend_daemon, headend_billing;

CREATE FUNCTION tou_campaigns_guard() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public AS $$
DECLARE
    me text;
BEGIN
    IF headend_is_owner() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'campaign %: a campaign is history, never deleted', OLD.name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        me := headend_require_role('operator', 'creating a parameter campaign');
        IF NEW.created_by IS DISTINCT FROM me OR NEW.state <> 'draft' OR NEW.approved_by IS NOT NULL THEN
            RAISE EXCEPTION 'a campaign is created as a draft under the operator signed in'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    IF (NEW.name, NEW.set_id, NEW.switch_at, NEW.max_attempts, NEW.created_by, NEW.created_at)
       IS DISTINCT FROM (OLD.name, OLD.set_id, OLD.switch_at, OLD.max_attempts, OLD.created_by, OLD.created_at) THEN
        RAISE EXCEPTION 'campaign %: what it writes, where and when is fixed at creation', OLD.name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.dry_run_requested_at IS DISTINCT FROM OLD.dry_run_requested_at THEN
        PERFORM headend_require_role('operator', 'asking for a campaign dry run');
        IF OLD.state IN ('done', 'cancelled') OR NEW.state IS DISTINCT FROM OLD.state
           OR NEW.approved_by IS DISTINCT FROM OLD.approved_by THEN
            RAISE EXCEPTION 'campaign %: a dry run is asked alone, of a campaign not finished', OLD.name
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.approved_by IS DISTINCT FROM OLD.approved_by THEN
        me := headend_require_role('approver', 'approving a parameter campaign');
        IF OLD.state <> 'draft' OR NEW.state <> 'approved' OR NEW.approved_by IS DISTINCT FROM me THEN
            RAISE EXCEPTION 'campaign %: a draft is approved once, under the approver signed in', OLD.name
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF me = OLD.created_by THEN
            RAISE EXCEPTION 'campaign %: approved by someone other than its creator', OLD.name
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.state IS DISTINCT FROM OLD.state THEN
        IF headend_is_daemon() THEN
            IF NOT (OLD.state = 'running' AND NEW.state = 'done') THEN
                RAISE EXCEPTION 'campaign %: the daemon only finishes a running campaign', OLD.name
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        ELSE
            PERFORM headend_require_role('operator', 'starting, pausing or cancelling a parameter campaign');
            IF NOT ((OLD.state IN ('approved', 'paused') AND NEW.state = 'running')
                    OR (OLD.state = 'running' AND NEW.state = 'paused')
                    OR (OLD.state IN ('draft', 'approved', 'running', 'paused') AND NEW.state = 'cancelled')) THEN
                RAISE EXCEPTION 'campaign %: cannot go from % to %', OLD.name, OLD.state, NEW.state
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tou_campaigns_guard BEFORE INSERT OR UPDATE OR DELETE ON tou_campaigns
    FOR EACH ROW EXECUTE FUNCTION tou_campaigns_guard();

CREATE FUNCTION tou_campaign_meters_guard() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public AS $$
DECLARE
    campaign_state text;
BEGIN
    IF headend_is_owner() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'a campaign''s meters are history, never deleted' USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT state INTO campaign_state FROM tou_campaigns WHERE id = NEW.campaign_id;
    IF TG_OP = 'INSERT' THEN
        PERFORM headend_require_role('operator', 'adding meters to a parameter campaign');
        IF campaign_state <> 'draft' OR NEW.state <> 'pending' OR NEW.attempts <> 0 THEN
            RAISE EXCEPTION 'meters join a campaign while it is a draft, pending'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    IF NOT headend_is_daemon() THEN
        RAISE EXCEPTION 'only the daemon records what happened at a meter' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (NEW.state, NEW.reason, NEW.attempts, NEW.next_try_at) IS NOT DISTINCT FROM
       (OLD.state, OLD.reason, OLD.attempts, OLD.next_try_at) THEN
        RETURN NEW;  -- a dry run's finding (reads only), whatever the campaign's state
    END IF;
    IF campaign_state <> 'running' THEN
        RAISE EXCEPTION 'campaign %: not running (%), no meter of it is touched', NEW.campaign_id, campaign_state
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.state IN ('verified', 'failed', 'skipped') THEN
        RAISE EXCEPTION 'campaign %, meter %: % is final', NEW.campaign_id, NEW.meter_id, OLD.state
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tou_campaign_meters_guard BEFORE INSERT OR UPDATE OR DELETE ON tou_campaign_meters
    FOR EACH ROW EXECUTE FUNCTION tou_campaign_meters_guard();
