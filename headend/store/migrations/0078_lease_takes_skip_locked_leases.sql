-- A renewal does not wait for another member's transaction on a lease row (issue 26, docs/scaling.md).
-- The fences (0065, 0074) lock the lease they check for share until their transaction ends; a member
-- frozen (SIGSTOP, a stalled VM) inside such a transaction kept that lock until it woke, and another
-- member's take of the lease waited with it, and with it the rest of that member's renewal (its own
-- channels' leases are taken in the same statement), so after half a lease it gave up every channel.
-- Now a lease of another member that some transaction holds locked is skipped in that renewal (not
-- taken, nothing waited for), the others are taken or renewed as before; the lease is taken at a later
-- renewal once the lock is gone. The lease cannot move while the lock is held, so the locked write is
-- still the only one under its epoch. The member's own leases are renewed as before (its own
-- transactions end in milliseconds).
CREATE OR REPLACE FUNCTION headend_lease_take_many(channels integer[], connected integer[], me text, ttl interval)
RETURNS TABLE (channel integer, lease_epoch bigint) LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
DECLARE
    free integer[];
    busy integer[];
BEGIN
    SELECT coalesce(array_agg(f.channel_id), '{}') INTO free FROM (
        SELECT o.channel_id FROM channel_leases o
        WHERE o.channel_id = ANY (channels) AND o.owner <> me FOR UPDATE SKIP LOCKED) f;
    SELECT coalesce(array_agg(o.channel_id), '{}') INTO busy FROM channel_leases o
    WHERE o.channel_id = ANY (channels) AND o.owner <> me AND o.channel_id <> ALL (free);
    RETURN QUERY
    INSERT INTO channel_leases AS l (channel_id, owner, epoch, taken_at, expires_at, connected)
    SELECT c, me, 1, clock_timestamp(), clock_timestamp() + ttl, c = ANY (connected)
    FROM unnest(channels) AS c WHERE c <> ALL (busy) ORDER BY c
    ON CONFLICT (channel_id) DO UPDATE SET
        owner = EXCLUDED.owner,
        epoch = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > clock_timestamp()
                     THEN l.epoch ELSE l.epoch + 1 END,
        taken_at = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > clock_timestamp()
                        THEN l.taken_at ELSE clock_timestamp() END,
        expires_at = EXCLUDED.expires_at,
        connected = EXCLUDED.connected
    WHERE l.owner = EXCLUDED.owner OR l.expires_at <= clock_timestamp()
    RETURNING l.channel_id, l.epoch;
END $$;

-- The services' lease: NULL (not taken this time) also while another member's transaction holds it
-- locked (an elected service's fenced write in flight, or a frozen ex-leader's).
CREATE OR REPLACE FUNCTION headend_service_take(service text, me text, ttl interval)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    taken bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM service_leases WHERE name = service AND owner <> me)
       AND NOT EXISTS (SELECT 1 FROM service_leases WHERE name = service AND owner <> me
                       FOR UPDATE SKIP LOCKED) THEN
        RETURN NULL;
    END IF;
    INSERT INTO service_leases AS l (name, owner, epoch, taken_at, expires_at)
    VALUES (service, me, 1, clock_timestamp(), clock_timestamp() + ttl)
    ON CONFLICT (name) DO UPDATE SET
        owner = EXCLUDED.owner,
        epoch = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > clock_timestamp()
                     THEN l.epoch ELSE l.epoch + 1 END,
        taken_at = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > clock_timestamp()
                        THEN l.taken_at ELSE clock_timestamp() END,
        expires_at = EXCLUDED.expires_at
    WHERE l.owner = EXCLUDED.owner OR l.expires_at <= clock_timestamp()
    RETURNING epoch INTO taken;
    RETURN taken;
END $$;
