-- Area memberships at scale (0030): the no-overlap check took an advisory lock per meter, so an
-- import of ~100,000 memberships in one transaction held 100,000 locks and ran out of shared memory
-- (max_locks_per_transaction). It now takes one lock for the whole transaction, whatever its size
-- (taking it again in the same transaction costs nothing): transactions writing memberships run one
-- after the other, and each still checks every row it wrote at commit, seeing the rows of the one
-- before it. And each row's check looks the meter up by index (enable_seqscan off): the plan of a
-- check made while the table looked small scanned the whole table for every row, 2 ms a row at 20,000.

CREATE OR REPLACE FUNCTION area_members_check() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, public SET enable_seqscan = off AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('headend.area_members'));
    IF EXISTS (
        SELECT 1 FROM area_members a JOIN area_members b
            ON a.meter_id = b.meter_id AND a.valid_from < b.valid_from
           AND (a.valid_to IS NULL OR a.valid_to > b.valid_from)
        WHERE a.meter_id = NEW.meter_id
    ) THEN
        RAISE EXCEPTION 'meter % would belong to two areas at once', NEW.meter_id
            USING ERRCODE = 'exclusion_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM areas WHERE id = NEW.area_id AND supply_meter_id = NEW.meter_id) THEN
        RAISE EXCEPTION 'meter % is the supply meter of its area, not a customer of it', NEW.meter_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
