-- Campaign targets (issue 25): the selection an operator gave (meters, channels, concentrators,
-- transformer areas, models) is kept with the campaign, fixed at creation like its set and switch
-- time; the meters it resolved to are its rows in tou_campaign_meters, each with the selector that
-- named it (``selected_by``, e.g. "area A1"), so a later inventory change does not alter a campaign
-- that was approved. The meters' rows are inserted by the operator and never updated but by the
-- daemon's column grants (0057), which leave ``selected_by`` alone.
ALTER TABLE tou_campaigns ADD COLUMN targets jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(targets) = 'object');
ALTER TABLE tou_campaign_meters ADD COLUMN selected_by text
    CHECK (selected_by IS NULL OR length(selected_by) BETWEEN 1 AND 300);

CREATE OR REPLACE FUNCTION tou_campaigns_guard() RETURNS trigger LANGUAGE plpgsql
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
    IF (NEW.name, NEW.set_id, NEW.switch_at, NEW.max_attempts, NEW.created_by, NEW.created_at, NEW.windows,
        NEW.targets)
       IS DISTINCT FROM (OLD.name, OLD.set_id, OLD.switch_at, OLD.max_attempts, OLD.created_by, OLD.created_at,
                         OLD.windows, OLD.targets) THEN
        RAISE EXCEPTION 'campaign %: what it writes, where, when and in which windows is fixed at creation', OLD.name
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
