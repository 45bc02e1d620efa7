-- Which account a meter belongs to is its open assignment row, and nothing else (issues 21, 22): the
-- copy meters.account_id that 0018 kept in step by triggers is dropped, so no reader can take a second
-- copy that drifted. Fee control, `billing holds`, manual commands, reconciliation and the identity
-- check read the open assignment (meter_assignments ... effective_to IS NULL).

-- A meter that somehow carries an account without any assignment row keeps it as its first one.
INSERT INTO meter_assignments (meter_id, account_id, effective_from, operator)
SELECT m.id, m.account_id, '0001-01-01 00:00:00+00', 'system' FROM meters m
WHERE m.account_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM meter_assignments a WHERE a.meter_id = m.id);

DROP TRIGGER meter_assignments_derive_account ON meter_assignments;
DROP FUNCTION meters_account_follows_assignments();
DROP TRIGGER meters_account_recorded ON meters;
DROP FUNCTION meters_account_recorded();
DROP TRIGGER meters_account_guard ON meters;
DROP FUNCTION meters_account_guard();
ALTER TABLE meters DROP COLUMN account_id;

-- A command records the account of its meter's open assignment (0020 read the dropped copy), and the
-- executor's lock covers that assignment too: a reassignment in flight waits for the send decision.
CREATE OR REPLACE FUNCTION commands_account_of_meter() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, public AS $$
BEGIN
    NEW.account_id := (SELECT account_id FROM meter_assignments WHERE meter_id = NEW.meter_id AND effective_to IS NULL);
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION headend_lock_command_meter(command_id bigint) RETURNS void LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM 1 FROM meters WHERE id = (SELECT meter_id FROM commands WHERE id = command_id) FOR SHARE;
    PERFORM 1 FROM meter_assignments
     WHERE meter_id = (SELECT meter_id FROM commands WHERE id = command_id) AND effective_to IS NULL FOR SHARE;
END $$;
