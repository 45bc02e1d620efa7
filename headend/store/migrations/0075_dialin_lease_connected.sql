-- A dial-in connection takes its channel's lease only from a member without the device (issue 26,
-- docs/scaling.md):
--
-- * channel_leases.connected: whether the lease's owner has the channel's device connected now (set
--   when its connection is bound, cleared when it closes, restated at every renewal). An expired lease
--   counts as not connected.
-- * headend_lease_seize takes the lease (next epoch) only when no other member holds it live with the
--   device connected; otherwise it returns no epoch and the holder, and the daemon treats the new
--   connection as a conflict (an impostor with a known identity draws no channel to its member).
-- * headend_lease_take_many names the channels whose device is connected to the caller.

ALTER TABLE channel_leases ADD COLUMN connected boolean NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION headend_lease_take(channel integer, me text, ttl interval)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO channel_leases AS l (channel_id, owner, epoch, taken_at, expires_at)
    VALUES (channel, me, 1, clock_timestamp(), clock_timestamp() + ttl)
    ON CONFLICT (channel_id) DO UPDATE SET
        owner = EXCLUDED.owner,
        epoch = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > clock_timestamp()
                     THEN l.epoch ELSE l.epoch + 1 END,
        taken_at = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > clock_timestamp()
                        THEN l.taken_at ELSE clock_timestamp() END,
        expires_at = EXCLUDED.expires_at,
        connected = l.connected AND l.owner = EXCLUDED.owner
    WHERE l.owner = EXCLUDED.owner OR l.expires_at <= clock_timestamp()
    RETURNING epoch;
$$;

-- Take or renew many leases in one statement; `connected`: those of them whose device is connected to
-- `me` now. The channels taken with their epochs; a channel missing is held by another live daemon.
DROP FUNCTION headend_lease_take_many(integer[], text, interval);
CREATE FUNCTION headend_lease_take_many(channels integer[], connected integer[], me text, ttl interval)
RETURNS TABLE (channel integer, lease_epoch bigint) LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
    INSERT INTO channel_leases AS l (channel_id, owner, epoch, taken_at, expires_at, connected)
    SELECT c, me, 1, clock_timestamp(), clock_timestamp() + ttl, c = ANY (connected)
    FROM unnest(channels) AS c ORDER BY c
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
$$;

-- A dial-in device connected to `me`: its channel's lease is `me`'s from now on (the next epoch unless
-- `me` already holds it live), with the device connected; unless another member holds the lease live
-- with the device connected: then no epoch, and that member.
DROP FUNCTION headend_lease_seize(integer, text, interval);
CREATE FUNCTION headend_lease_seize(channel integer, me text, ttl interval)
RETURNS TABLE (lease_epoch bigint, holder text) LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
BEGIN
    RETURN QUERY
    INSERT INTO channel_leases AS l (channel_id, owner, epoch, taken_at, expires_at, connected)
    VALUES (channel, me, 1, clock_timestamp(), clock_timestamp() + ttl, true)
    ON CONFLICT (channel_id) DO UPDATE SET
        owner = EXCLUDED.owner,
        epoch = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > clock_timestamp()
                     THEN l.epoch ELSE l.epoch + 1 END,
        taken_at = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > clock_timestamp()
                        THEN l.taken_at ELSE clock_timestamp() END,
        expires_at = EXCLUDED.expires_at,
        connected = true
    WHERE l.owner = EXCLUDED.owner OR l.expires_at <= clock_timestamp() OR NOT l.connected
    RETURNING l.epoch, l.owner;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::bigint, k.owner FROM channel_leases k WHERE k.channel_id = channel;
    END IF;
END $$;

-- The device's connection to `me` closed: its lease says so (another member may take it now).
CREATE FUNCTION headend_lease_disconnected(channel integer, me text)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE channel_leases SET connected = false WHERE channel_id = channel AND owner = me AND connected;
$$;

REVOKE ALL ON FUNCTION headend_lease_take_many(integer[], integer[], text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION headend_lease_seize(integer, text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION headend_lease_disconnected(integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION headend_lease_take_many(integer[], integer[], text, interval) TO headend_daemon;
GRANT EXECUTE ON FUNCTION headend_lease_seize(integer, text, interval) TO headend_daemon;
GRANT EXECUTE ON FUNCTION headend_lease_disconnected(integer, text) TO headend_daemon;
