-- Q/GDW 1376.1 concentrators: a channel of kind 'gdw1376' is one concentrator (address = its
-- region-terminal A1+A2, e.g. 0314-25394; the URL in settings says dial-in gdw1376:// or outbound
-- gdw1376+tcp://); its meters carry their measurement point and port in meters.settings (pn, port).
-- The concentrator's own event records (AFN 0E: ERC 14 power off/on ...) are events of category
-- 'terminal' on the channel, stored once per (channel, kind, time). 'dtu' is the dial-in DTU kind of
-- migration 0010 (kept in the list so that either order of the two branches leaves both kinds).
ALTER TABLE channels DROP CONSTRAINT channels_kind_check;
ALTER TABLE channels ADD CONSTRAINT channels_kind_check CHECK (kind IN ('serial', 'tcp', 'dtu', 'gdw1376'));

ALTER TABLE events DROP CONSTRAINT events_category_check;
ALTER TABLE events ADD CONSTRAINT events_category_check CHECK (category IN ('meter', 'comm', 'terminal'));
CREATE UNIQUE INDEX events_terminal_record_key ON events (channel_id, kind, occurred_at)
    WHERE category = 'terminal';
