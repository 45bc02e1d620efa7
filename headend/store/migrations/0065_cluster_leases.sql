-- Several daemons on one database share the channels (issue 26, `[cluster] enabled`): each daemon
-- announces itself in cluster_members and renews every few seconds; each channel is owned by at most
-- one daemon at a time through its row in channel_leases, with an epoch that grows at every change of
-- owner (or when an owner takes back a lease it let expire).
--
-- * Members and leases change only through the functions below (the daemon has no direct write).
-- * A lease is taken when it is free, expired or already held by the taker; a live lease of another
--   daemon is never taken (the rendezvous assignment asks its owner to release it first).
-- * Fencing: moving a relay command from pending to sent is refused unless the session names the
--   lease of the meter's channel it holds (`headend.lease_owner`, `headend.lease_epoch`, set in the
--   sending transaction) and that lease is current. Channels with no lease row (a single daemon, an
--   active/standby pair) and field switches (cause 'field', over the engineer's own port) are not fenced.

CREATE TABLE cluster_members (
    member      text PRIMARY KEY CHECK (length(member) BETWEEN 1 AND 200),
    host        text NOT NULL CHECK (length(host) <= 200),
    pid         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    renewed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz NOT NULL
);

CREATE TABLE channel_leases (
    channel_id  integer PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
    owner       text NOT NULL,
    epoch       bigint NOT NULL CHECK (epoch >= 1),
    taken_at    timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

CREATE FUNCTION headend_cluster_renew(me text, host_name text, process integer, ttl interval)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO cluster_members (member, host, pid, expires_at)
    VALUES (me, host_name, process, clock_timestamp() + ttl)
    ON CONFLICT (member) DO UPDATE SET renewed_at = clock_timestamp(), expires_at = clock_timestamp() + ttl;
$$;

-- The lease's epoch when taken or renewed; NULL while another daemon holds it.
CREATE FUNCTION headend_lease_take(channel integer, me text, ttl interval)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO channel_leases AS l (channel_id, owner, epoch, taken_at, expires_at)
    VALUES (channel, me, 1, clock_timestamp(), clock_timestamp() + ttl)
    ON CONFLICT (channel_id) DO UPDATE SET
        owner = EXCLUDED.owner,
        epoch = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > clock_timestamp()
                     THEN l.epoch ELSE l.epoch + 1 END,
        taken_at = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > clock_timestamp()
                        THEN l.taken_at ELSE clock_timestamp() END,
        expires_at = EXCLUDED.expires_at
    WHERE l.owner = EXCLUDED.owner OR l.expires_at <= clock_timestamp()
    RETURNING epoch;
$$;

-- Let a lease go at once (the next owner takes it with the next epoch).
CREATE FUNCTION headend_lease_release(channel integer, me text)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE channel_leases SET expires_at = clock_timestamp()
    WHERE channel_id = channel AND owner = me AND expires_at > clock_timestamp();
$$;

-- A daemon leaving: its leases let go and its membership removed.
CREATE FUNCTION headend_cluster_leave(me text)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE channel_leases SET expires_at = clock_timestamp() WHERE owner = me AND expires_at > clock_timestamp();
    DELETE FROM cluster_members WHERE member = me;
$$;

CREATE FUNCTION commands_lease_fence() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
DECLARE
    lease channel_leases%ROWTYPE;
    holder text := nullif(current_setting('headend.lease_owner', true), '');
    held bigint := nullif(current_setting('headend.lease_epoch', true), '')::bigint;
BEGIN
    IF NEW.cause IS NOT DISTINCT FROM 'field' THEN
        RETURN NEW;
    END IF;
    SELECT l.* INTO lease FROM channel_leases l JOIN meters m ON m.channel_id = l.channel_id
    WHERE m.id = NEW.meter_id FOR SHARE OF l;
    IF NOT FOUND THEN
        RETURN NEW;
    END IF;
    IF holder IS DISTINCT FROM lease.owner OR held IS DISTINCT FROM lease.epoch
       OR lease.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION 'command %: not sent: the channel lease is held by % at epoch % (this session: % at epoch %)',
            NEW.id, lease.owner, lease.epoch, coalesce(holder, 'none'), coalesce(held::text, 'none')
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER commands_lease_fence BEFORE UPDATE OF state ON commands
    FOR EACH ROW WHEN (NEW.state = 'sent' AND OLD.state = 'pending')
    EXECUTE FUNCTION commands_lease_fence();

REVOKE ALL ON FUNCTION headend_cluster_renew(text, text, integer, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION headend_lease_take(integer, text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION headend_lease_release(integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION headend_cluster_leave(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION headend_cluster_renew(text, text, integer, interval) TO headend_daemon;
GRANT EXECUTE ON FUNCTION headend_lease_take(integer, text, interval) TO headend_daemon;
GRANT EXECUTE ON FUNCTION headend_lease_release(integer, text) TO headend_daemon;
GRANT EXECUTE ON FUNCTION headend_cluster_leave(text) TO headend_daemon;
GRANT SELECT ON cluster_members, channel_leases TO headend_daemon, headend_billing, headend_reporting;
