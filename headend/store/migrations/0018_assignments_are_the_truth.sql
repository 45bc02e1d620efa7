-- Which account a meter belongs to: the assignment rows are the only truth (issue 22). Before, a meter
-- without assignment rows billed to meters.account_id, which an inventory re-import without an
-- `account` key set to NULL while `accounts show` still listed the open assignment: billing went on and
-- fee control silently stopped.
--
-- * Every meter that carried an account without assignment rows gets its open assignment (from
--   the year 1, as it billed before); where the column disagreed with an open assignment, the
--   assignment wins.
-- * meters.account_id is derived: a trigger on meter_assignments keeps it equal to the open
--   assignment's account in the same transaction, and no login other than the schema owner writes it.
--   An owner's direct write (seeding, repairs) is recorded as an assignment row, never as a second copy.

INSERT INTO meter_assignments (meter_id, account_id, effective_from, operator)
SELECT m.id, m.account_id, '0001-01-01 00:00:00+00', 'system' FROM meters m
WHERE m.account_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM meter_assignments a WHERE a.meter_id = m.id);

UPDATE meters m SET account_id = (SELECT a.account_id FROM meter_assignments a
                                  WHERE a.meter_id = m.id AND a.effective_to IS NULL)
WHERE m.account_id IS DISTINCT FROM (SELECT a.account_id FROM meter_assignments a
                                     WHERE a.meter_id = m.id AND a.effective_to IS NULL);

CREATE FUNCTION meters_account_follows_assignments() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
DECLARE current bigint;
BEGIN
    SELECT account_id INTO current FROM meter_assignments WHERE meter_id = NEW.meter_id AND effective_to IS NULL;
    UPDATE meters SET account_id = current WHERE id = NEW.meter_id AND account_id IS DISTINCT FROM current;
    RETURN NULL;
END $$;
CREATE TRIGGER meter_assignments_derive_account AFTER INSERT OR UPDATE ON meter_assignments
    FOR EACH ROW EXECUTE FUNCTION meters_account_follows_assignments();

CREATE FUNCTION meters_account_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF pg_trigger_depth() > 1 OR headend_is_owner()
       OR (TG_OP = 'INSERT' AND NEW.account_id IS NULL)
       OR (TG_OP = 'UPDATE' AND NEW.account_id IS NOT DISTINCT FROM OLD.account_id) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'meter %: its account follows its assignments (`headend accounts assign`)',
        coalesce(NEW.name, NEW.address) USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER meters_account_guard BEFORE INSERT OR UPDATE OF account_id ON meters
    FOR EACH ROW EXECUTE FUNCTION meters_account_guard();

-- The owner's direct write becomes assignment rows (which set the column back through the trigger above).
CREATE FUNCTION meters_account_recorded() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    open_row meter_assignments%ROWTYPE;
    history boolean;
BEGIN
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;
    END IF;
    SELECT * INTO open_row FROM meter_assignments WHERE meter_id = NEW.id AND effective_to IS NULL;
    IF NEW.account_id IS NOT DISTINCT FROM open_row.account_id THEN
        RETURN NULL;
    END IF;
    history := EXISTS (SELECT 1 FROM meter_assignments WHERE meter_id = NEW.id);
    IF open_row.id IS NOT NULL THEN
        UPDATE meter_assignments SET effective_to = greatest(now(), open_row.effective_from + interval '1 microsecond')
         WHERE id = open_row.id;
    END IF;
    IF NEW.account_id IS NOT NULL THEN
        INSERT INTO meter_assignments (meter_id, account_id, effective_from, operator)
        VALUES (NEW.id, NEW.account_id,
                CASE WHEN history THEN greatest(now(), open_row.effective_from + interval '2 microseconds')
                     ELSE '0001-01-01 00:00:00+00'::timestamptz END,
                'system');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER meters_account_recorded AFTER INSERT OR UPDATE OF account_id ON meters
    FOR EACH ROW EXECUTE FUNCTION meters_account_recorded();

REVOKE UPDATE (account_id) ON meters FROM headend_billing;
