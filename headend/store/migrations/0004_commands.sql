-- Relay commands: rows first, a guarded state machine, every state change written to audit_log.

CREATE TYPE command_state AS ENUM ('pending', 'sent', 'confirmed', 'failed', 'cancelled', 'expired');

CREATE TABLE commands (
    id                bigserial PRIMARY KEY,
    meter_id          integer NOT NULL REFERENCES meters(id),
    action            text NOT NULL CHECK (action IN ('disconnect', 'reconnect')),
    state             command_state NOT NULL DEFAULT 'pending',
    cause             text NOT NULL,                  -- arrears, payment, manual, bulk ...
    operator          text NOT NULL,                  -- operator id, or 'system' for automation
    approved_by       text,
    requires_approval boolean NOT NULL DEFAULT false,
    dry_run           boolean NOT NULL DEFAULT false,
    idempotency_key   text UNIQUE,
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    sent_at           timestamptz,
    finished_at       timestamptz,
    last_error        text,
    evidence          jsonb NOT NULL DEFAULT '{}'::jsonb,   -- read-back relay state, trip/close event record
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (approved_by IS NULL OR approved_by <> operator)  -- the second operator must be another person
);
-- At most one open command per meter: a new one needs the open one finished or cancelled first.
CREATE UNIQUE INDEX commands_one_open_per_meter ON commands (meter_id) WHERE state IN ('pending', 'sent');
CREATE INDEX commands_due_idx ON commands (next_attempt_at) WHERE state IN ('pending', 'sent');

-- Allowed transitions. sent -> pending is a retry after an unconfirmed attempt.
CREATE FUNCTION commands_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM OLD.state AND NOT (
        (OLD.state = 'pending' AND NEW.state IN ('sent', 'failed', 'cancelled', 'expired')) OR
        (OLD.state = 'sent' AND NEW.state IN ('pending', 'confirmed', 'failed', 'cancelled', 'expired'))
    ) THEN
        RAISE EXCEPTION 'command %: transition % -> % is not allowed', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.state IN ('confirmed', 'failed', 'cancelled', 'expired') AND NEW.finished_at IS NULL THEN
        NEW.finished_at := now();
    END IF;
    IF NEW.state = 'sent' AND NEW.sent_at IS NULL THEN
        NEW.sent_at := now();
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER commands_transition BEFORE UPDATE ON commands
    FOR EACH ROW EXECUTE FUNCTION commands_check_transition();

-- Audit every creation and state change; the actor is the session's headend.actor setting if set.
CREATE FUNCTION commands_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO audit_log (actor, action, entity, entity_id, reason, details)
        VALUES (
            coalesce(nullif(current_setting('headend.actor', true), ''), NEW.operator),
            'command.' || NEW.state,
            'command',
            NEW.id::text,
            NEW.cause,
            jsonb_build_object(
                'meter_id', NEW.meter_id, 'action', NEW.action,
                'from', CASE WHEN TG_OP = 'UPDATE' THEN OLD.state::text END, 'to', NEW.state::text,
                'attempts', NEW.attempts, 'error', NEW.last_error, 'evidence', NEW.evidence,
                'dry_run', NEW.dry_run));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER commands_audit AFTER INSERT OR UPDATE ON commands
    FOR EACH ROW EXECUTE FUNCTION commands_audit();
