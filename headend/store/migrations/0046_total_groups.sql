-- A concentrator's total group (总加组, Q/GDW 1376.1 AFN 04 F14) is inventoried like a meter of the
-- concentrator's channel: protocol 'gdw1376-group', address = the group number 1..8. Its readings are
-- the group's curve quantities (group_power_kw, group_reactive_power_kvar, group_energy_kwh,
-- group_reactive_energy_kvarh).
ALTER TABLE meters DROP CONSTRAINT meters_protocol_check;
ALTER TABLE meters ADD CONSTRAINT meters_protocol_check
    CHECK (protocol IN ('dlt645-2007', 'dlt645-1997', 'modbus', 'gdw1376-group'));
ALTER TABLE meters ADD CONSTRAINT meters_group_number
    CHECK (protocol <> 'gdw1376-group' OR (address ~ '^[1-8]$' AND NOT has_relay)) NOT VALID;
