-- The meter number (表号, DL/T 645-2007 04 00 04 02, 12 digits from the nameplate) an operator states
-- for a meter in the inventory (issues 21 and 22): the recorded identity that dial-in verification
-- compares before any password goes to a connection and before its readings are stored as actual.
-- It wins over the number the billing pass learned on first use (meter_identities): a first read that
-- disagrees with it is an identity hold (an alarm), never a new record. Like every inventory column it
-- is written by an authenticated admin (0014's inventory_guard) or the schema owner.

ALTER TABLE meters ADD COLUMN meter_number text CHECK (meter_number ~ '^[0-9]{12}$');

DROP TRIGGER meters_writer ON meters;
CREATE TRIGGER meters_writer BEFORE INSERT OR DELETE
    OR UPDATE OF name, protocol, address, unit_id, model, channel_id, has_relay, multiplier, enabled,
                 installed_at, removed_at, settings, meter_number
    ON meters FOR EACH ROW EXECUTE FUNCTION inventory_guard();
