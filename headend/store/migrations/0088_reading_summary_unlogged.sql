-- The reading rules' hourly summary and its six-hour blocks are derived from the readings, so they are
-- written without WAL (UNLOGGED): at every pass the fold rewrites the current hour of every meter (at
-- 20,000 meters 160,000 rows, 45 MB of WAL and about half the fold's time, bench/analytics.py).
-- After a crash (or on a promoted standby, or a restored base backup) the server starts them empty, and
-- reading_hours_kept with them (unlogged too, so that the three are empty together): the next fold
-- finds no row there and summarises again, from the readings, every hour it keeps
-- (headend/store/reading_hours.py). reading_hours_dirty stays logged, written with the readings.
ALTER TABLE reading_blocks SET UNLOGGED;
ALTER TABLE reading_hours SET UNLOGGED;
ALTER TABLE reading_hours_kept SET UNLOGGED;
GRANT INSERT ON reading_hours_kept TO headend_daemon;
