-- The inventory (channels and meters) under the operators' rules of 0008: `headend inventory import` is
-- an authenticated admin's write, from the operators' desk login (headend_billing) or the schema owner.
-- The daemon only reads the inventory: 0005 gave it INSERT/UPDATE/DELETE on channels and meters, which
-- it never needed, so a daemon login could have added a meter or moved one to another bus unseen.
--
-- * channels: any insert, update or delete takes an authenticated admin.
-- * meters: insert, delete and a change of what the meter is or where it hangs (the inventory
--   columns) take an authenticated admin. The billing columns keep their own guards: account_id
--   (0013's accounts rules, assignments by an admin), protected (0008: clearing it takes an admin).

REVOKE INSERT, UPDATE, DELETE ON channels, meters FROM headend_daemon;
GRANT INSERT, UPDATE ON channels, meters TO headend_billing;

CREATE FUNCTION inventory_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT headend_is_owner() THEN
        PERFORM headend_require_role('admin', format('changing the inventory (%s)', TG_TABLE_NAME));
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER channels_writer BEFORE INSERT OR UPDATE OR DELETE ON channels
    FOR EACH ROW EXECUTE FUNCTION inventory_guard();
CREATE TRIGGER meters_writer BEFORE INSERT OR DELETE
    OR UPDATE OF name, protocol, address, unit_id, model, channel_id, has_relay, multiplier, enabled,
                 installed_at, removed_at, settings
    ON meters FOR EACH ROW EXECUTE FUNCTION inventory_guard();
