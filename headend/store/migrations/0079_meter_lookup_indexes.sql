-- A meter is looked up by name, by address or by channel/address (find_meter: the meter page, every
-- command that names a meter). Only installed meters' names were indexed (meters_name_installed), and
-- addresses only after their channel and protocol, so each look-up read every meter: about 7 ms at
-- 10,000 meters, a quarter of the console's meter page in the database (bench/console.py). Plain
-- indexes on both let it read only the meters it names.
CREATE INDEX meters_name_idx ON meters (name);
CREATE INDEX meters_address_idx ON meters (address);
