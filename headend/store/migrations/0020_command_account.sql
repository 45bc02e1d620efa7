-- A relay command remembers the account its meter was on when it was made: it is sent only while the
-- meter is still on that account (the gates are checked again when the frame goes out). The database
-- fills it in from the meter at creation, so no client can name another account, and it never changes.
ALTER TABLE commands ADD COLUMN account_id integer REFERENCES accounts(id);

-- Open commands made before this migration: the meter's account now is the one they were made for.
UPDATE commands c SET account_id = m.account_id
FROM meters m WHERE m.id = c.meter_id AND c.state IN ('pending', 'sent');

CREATE FUNCTION commands_account_of_meter() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    NEW.account_id := (SELECT account_id FROM meters WHERE id = NEW.meter_id);
    RETURN NEW;
END $$;
CREATE TRIGGER commands_account_of_meter BEFORE INSERT ON commands
    FOR EACH ROW EXECUTE FUNCTION commands_account_of_meter();

CREATE FUNCTION commands_account_fixed() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.account_id IS DISTINCT FROM OLD.account_id AND NOT headend_is_owner() THEN
        RAISE EXCEPTION 'command %: the account it was made for is fixed at creation', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER commands_account_fixed BEFORE UPDATE OF account_id ON commands
    FOR EACH ROW EXECUTE FUNCTION commands_account_fixed();

-- The executor locks the meter of a command it is about to send (FOR SHARE: a protection or a
-- reassignment in flight waits for the decision) without any write privilege on meters.
CREATE FUNCTION headend_lock_command_meter(command_id bigint) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM 1 FROM meters WHERE id = (SELECT meter_id FROM commands WHERE id = command_id) FOR SHARE;
END $$;
REVOKE EXECUTE ON FUNCTION headend_lock_command_meter(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION headend_lock_command_meter(bigint) TO headend_daemon, headend_billing;
