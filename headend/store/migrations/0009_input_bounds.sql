-- Bounds the inventory import checks (headend/limits.py, headend/inventory.py), enforced by the
-- database too so that no other writer stores what the daemon would refuse. NOT VALID: rows stored
-- before this migration are not re-checked (an upgrade never fails on old data); new and updated
-- rows are.

ALTER TABLE meters
    ADD CONSTRAINT meters_unit_id_range CHECK (unit_id IS NULL OR unit_id BETWEEN 1 AND 247) NOT VALID,
    ADD CONSTRAINT meters_multiplier_range
        CHECK (multiplier > 0 AND multiplier <= 1000000 AND multiplier <> 'NaN') NOT VALID,
    ADD CONSTRAINT meters_name_length CHECK (name IS NULL OR length(name) <= 200) NOT VALID,
    ADD CONSTRAINT meters_not_broadcast
        CHECK (protocol = 'modbus' OR address NOT IN ('999999999999', 'AAAAAAAAAAAA')) NOT VALID;

ALTER TABLE channels
    ADD CONSTRAINT channels_name_length CHECK (length(name) <= 200) NOT VALID;
