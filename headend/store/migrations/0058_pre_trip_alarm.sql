-- Warning before the cut (issue 25): the meter's pre-trip alarm (0x1C 2A, released by 2B) is a relay
-- command like a disconnect: persisted, caused by fee control or an authenticated operator, gated at
-- send time, confirmed only by a read-back of status word 3 bit 7. Everything 0008/0017/0037 guard on
-- commands (who creates, approves, sends, confirms, cancels; the state machine; one open command per
-- meter) applies to the new kinds unchanged.

ALTER TABLE commands DROP CONSTRAINT commands_action_check;
ALTER TABLE commands ADD CONSTRAINT commands_action_check
    CHECK (action IN ('disconnect', 'reconnect', 'alarm', 'alarm_release'));

-- When the read-back confirmed the command, by the executor's clock (the clock fee control judges the
-- notice period on): an automatic disconnect goes out only after a confirmed alarm at least the notice
-- period old. Set once, on the move to confirmed, by whoever may confirm (the daemon, a field command's
-- engineer: 0008's guard). Not bounded by the database's clock: the executor's clock is the one the
-- notice period runs on (a test, or a daemon host whose clock differs a little, runs on its own).
ALTER TABLE commands ADD COLUMN confirmed_at timestamptz;

CREATE FUNCTION commands_confirmed_at_guard() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.confirmed_at IS NOT DISTINCT FROM OLD.confirmed_at OR headend_is_owner() THEN
        RETURN NEW;
    END IF;
    IF NOT (NEW.state = 'confirmed' AND OLD.state <> 'confirmed' AND OLD.confirmed_at IS NULL) THEN
        RAISE EXCEPTION 'command %: its confirmation time is set once, when it is confirmed', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER commands_confirmed_at_guard BEFORE UPDATE OF confirmed_at ON commands
    FOR EACH ROW EXECUTE FUNCTION commands_confirmed_at_guard();

-- A confirmation carries a read-back showing the relay (or, for the alarm kinds, the pre-trip alarm bit)
-- where the action puts it. Otherwise as 0017.
CREATE OR REPLACE FUNCTION commands_flow_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
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
        WHEN NEW.action = 'alarm' THEN seen -> 'pre_trip_alarm' = 'true'::jsonb
        WHEN NEW.action = 'alarm_release' THEN seen -> 'pre_trip_alarm' = 'false'::jsonb
        WHEN NEW.reconnect_mode = 'close_allowed' THEN seen -> 'command_open' = 'false'::jsonb
        ELSE seen -> 'open' = 'false'::jsonb END, false) THEN
        RAISE EXCEPTION 'command %: confirmed only with a read-back that shows %', OLD.id,
            CASE NEW.action WHEN 'disconnect' THEN 'the relay open'
                            WHEN 'alarm' THEN 'the pre-trip alarm on'
                            WHEN 'alarm_release' THEN 'the pre-trip alarm off'
                            ELSE 'the relay closed (or close allowed)' END
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;

-- The policy: warn with the meter's alarm before an automatic disconnect. NULL on an account means the
-- [safety] alarm_before_cut of the configuration (the daemon publishes it as a setting, below).
ALTER TABLE accounts ADD COLUMN alarm_before_cut boolean;

-- The database refuses an automatic (arrears) disconnect of a DL/T 645 meter whose account asks for
-- the alarm when no confirmed alarm is in force on the meter for that account (the last confirmed
-- alarm-kind command is an alarm). The notice period's age is the send gate's (judged on the
-- executor's clock, headend.control.send_gates); the database holds the line that no cut goes out
-- without any warning at all.
CREATE FUNCTION headend_alarm_before_cut_policy() RETURNS boolean LANGUAGE sql STABLE
    SET search_path = pg_catalog, public AS $$
    SELECT coalesce((SELECT value::boolean FROM headend_settings WHERE key = 'safety.alarm_before_cut'), false)
$$;

CREATE FUNCTION commands_alarm_before_cut() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.state = 'sent' AND OLD.state = 'pending' AND NEW.action = 'disconnect' AND NEW.cause = 'arrears'
       AND (SELECT protocol FROM meters WHERE id = NEW.meter_id) = 'dlt645-2007'
       AND coalesce((SELECT alarm_before_cut FROM accounts WHERE id = NEW.account_id),
                    headend_alarm_before_cut_policy())
       AND coalesce((SELECT c.action FROM commands c
                     WHERE c.meter_id = NEW.meter_id AND c.account_id IS NOT DISTINCT FROM NEW.account_id
                       AND c.action IN ('alarm', 'alarm_release') AND c.state = 'confirmed'
                     ORDER BY c.confirmed_at DESC NULLS LAST, c.id DESC LIMIT 1), '') <> 'alarm' THEN
        RAISE EXCEPTION 'command %: no automatic disconnect without a confirmed pre-trip alarm on the meter', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER commands_alarm_before_cut BEFORE UPDATE OF state ON commands
    FOR EACH ROW EXECUTE FUNCTION commands_alarm_before_cut();
