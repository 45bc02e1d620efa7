-- Every meter has a name that every command accepts: the one the inventory gives, or `channel/address`
-- (the Modbus unit id for Modbus meters) when none is given. Names are unique among installed meters.

CREATE FUNCTION meters_default_name() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.name IS NULL THEN
        NEW.name := (SELECT c.name FROM channels c WHERE c.id = NEW.channel_id) || '/' || NEW.address;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER meters_default_name BEFORE INSERT OR UPDATE OF name ON meters
    FOR EACH ROW EXECUTE FUNCTION meters_default_name();

UPDATE meters m SET name = c.name || '/' || m.address FROM channels c WHERE c.id = m.channel_id AND m.name IS NULL;
-- Names given twice before this migration: the first meter keeps it, the others get their id appended.
UPDATE meters m SET name = m.name || '#' || m.id
WHERE m.removed_at IS NULL AND EXISTS (
    SELECT 1 FROM meters o WHERE o.name = m.name AND o.removed_at IS NULL AND o.id < m.id);
ALTER TABLE meters ALTER COLUMN name SET NOT NULL;
CREATE UNIQUE INDEX meters_name_installed ON meters (name) WHERE removed_at IS NULL;
