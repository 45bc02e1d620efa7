-- Exactly once: a relay command is sent once per attempt; a spooled daemon event is stored once.
--
-- One send per attempt: the attempt counter moves only with pending -> sent, so a command already
-- sent can never be "sent" again (sent -> sent) by a second executor or a stale view of the row.
CREATE OR REPLACE FUNCTION commands_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IS DISTINCT FROM OLD.state AND NOT (
        (OLD.state = 'pending' AND NEW.state IN ('sent', 'failed', 'cancelled', 'expired')) OR
        (OLD.state = 'sent' AND NEW.state IN ('pending', 'confirmed', 'failed', 'cancelled', 'expired'))
    ) THEN
        RAISE EXCEPTION 'command %: transition % -> % is not allowed', OLD.id, OLD.state, NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.attempts IS DISTINCT FROM OLD.attempts
       AND NOT (OLD.state = 'pending' AND NEW.state = 'sent' AND NEW.attempts = OLD.attempts + 1) THEN
        RAISE EXCEPTION 'command %: an attempt is counted only when a pending command is sent (% -> %)',
            OLD.id, OLD.state, NEW.state
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

-- A daemon's own event (a clock correction) replayed from the spool is stored once, like a meter's.
CREATE UNIQUE INDEX events_comm_record_key ON events (meter_id, kind, occurred_at) WHERE category = 'comm';
