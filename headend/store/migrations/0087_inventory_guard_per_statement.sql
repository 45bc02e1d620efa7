-- Channels and meters are checked for an authenticated admin once per statement, not once per row,
-- as areas and memberships are since 0077 (the check, inventory_guard of migration 0014, is
-- unchanged; a statement by anyone else is refused whether or not it touches a row). With the
-- import upserting its meters in one statement, an import of 20,000 meters under the desk login no
-- longer pays the operator look-up per meter (and twice per meter that already exists: the insert
-- attempt and the update of ON CONFLICT each fired the row trigger).
DROP TRIGGER channels_writer ON channels;
DROP TRIGGER meters_writer ON meters;
CREATE TRIGGER channels_writer BEFORE INSERT OR UPDATE OR DELETE ON channels
    FOR EACH STATEMENT EXECUTE FUNCTION inventory_guard();
CREATE TRIGGER meters_writer BEFORE INSERT OR DELETE
    OR UPDATE OF name, protocol, address, unit_id, model, channel_id, has_relay, multiplier, enabled,
                 installed_at, removed_at, settings, meter_number
    ON meters FOR EACH STATEMENT EXECUTE FUNCTION inventory_guard();
