-- Daemons sharing the channels, second slice (issue 26, docs/scaling.md):
--
-- * Dial-in take-over: the daemon a device connects to takes the device's channel lease at once with
--   the next epoch, even while another daemon holds it (headend_lease_seize); the other sees the epoch
--   moved at its next renewal and lets go (drops its connection).
-- * A renewal takes all its leases in one statement (headend_lease_take_many).
-- * Lease moves are recorded (lease_moves, by trigger: every new epoch, with the previous owner and
--   why) for `headend cluster status` (moves in the last hour); kept 7 days.
-- * Services that must run once (billing, VEE, fee-control automation, storage upkeep) run on the
--   daemon holding the `services` lease (service_leases, with an epoch like a channel's). A session
--   that names a service lease (`headend.service_owner`, `headend.service_epoch`) may write bills,
--   ledger entries or automatic (operator 'system') commands only while that lease is current: a
--   frozen ex-leader woken after the election moved commits none.
-- * Clock and parameter writes: headend_write_fence(meter, owner, epoch) refuses unless the
--   meter's channel lease is the one named and current (no lease row: a lone daemon, not fenced).
--   The daemon calls it right before the write frame goes out.

CREATE TABLE lease_moves (
    id          bigserial PRIMARY KEY,
    channel_id  integer NOT NULL,
    from_owner  text,
    to_owner    text NOT NULL,
    epoch       bigint NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('first', 'taken', 'seized', 'retaken')),
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX lease_moves_at ON lease_moves (at);

CREATE FUNCTION channel_leases_record_move() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO lease_moves (channel_id, from_owner, to_owner, epoch, reason)
        VALUES (NEW.channel_id, NULL, NEW.owner, NEW.epoch, 'first');
    ELSIF NEW.epoch <> OLD.epoch THEN
        INSERT INTO lease_moves (channel_id, from_owner, to_owner, epoch, reason)
        VALUES (NEW.channel_id, OLD.owner, NEW.owner, NEW.epoch,
                CASE WHEN OLD.owner = NEW.owner THEN 'retaken'
                     WHEN OLD.expires_at > clock_timestamp() THEN 'seized'
                     ELSE 'taken' END);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER channel_leases_record_move AFTER INSERT OR UPDATE ON channel_leases
    FOR EACH ROW EXECUTE FUNCTION channel_leases_record_move();

-- Take or renew many leases in one statement (a renewal of hundreds of channels): the channels taken
-- with their epochs; a channel missing from the result is held by another live daemon.
CREATE FUNCTION headend_lease_take_many(channels integer[], me text, ttl interval)
RETURNS TABLE (channel integer, lease_epoch bigint) LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
    INSERT INTO channel_leases AS l (channel_id, owner, epoch, taken_at, expires_at)
    SELECT c, me, 1, clock_timestamp(), clock_timestamp() + ttl FROM unnest(channels) AS c ORDER BY c
    ON CONFLICT (channel_id) DO UPDATE SET
        owner = EXCLUDED.owner,
        epoch = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > clock_timestamp()
                     THEN l.epoch ELSE l.epoch + 1 END,
        taken_at = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > clock_timestamp()
                        THEN l.taken_at ELSE clock_timestamp() END,
        expires_at = EXCLUDED.expires_at
    WHERE l.owner = EXCLUDED.owner OR l.expires_at <= clock_timestamp()
    RETURNING l.channel_id, l.epoch;
$$;

-- A dial-in device connected to `me`: its channel's lease is `me`'s from now on (the next epoch unless
-- `me` already holds it live); returns the epoch.
CREATE FUNCTION headend_lease_seize(channel integer, me text, ttl interval)
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
    RETURNING epoch;
$$;

CREATE TABLE service_leases (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    owner       text NOT NULL,
    epoch       bigint NOT NULL CHECK (epoch >= 1),
    taken_at    timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- The service lease's epoch when taken or renewed; NULL while another live daemon holds it.
CREATE FUNCTION headend_service_take(service text, me text, ttl interval)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
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
    RETURNING epoch;
$$;

CREATE OR REPLACE FUNCTION headend_cluster_renew(me text, host_name text, process integer, ttl interval)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO cluster_members (member, host, pid, expires_at)
    VALUES (me, host_name, process, clock_timestamp() + ttl)
    ON CONFLICT (member) DO UPDATE SET renewed_at = clock_timestamp(), expires_at = clock_timestamp() + ttl;
    DELETE FROM lease_moves WHERE at < clock_timestamp() - interval '7 days';
$$;

CREATE OR REPLACE FUNCTION headend_cluster_leave(me text)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE channel_leases SET expires_at = clock_timestamp() WHERE owner = me AND expires_at > clock_timestamp();
    UPDATE service_leases SET expires_at = clock_timestamp() WHERE owner = me AND expires_at > clock_timestamp();
    DELETE FROM cluster_members WHERE member = me;
$$;

CREATE FUNCTION service_lease_fence() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
DECLARE
    lease service_leases%ROWTYPE;
    holder text := nullif(current_setting('headend.service_owner', true), '');
    held bigint := nullif(current_setting('headend.service_epoch', true), '')::bigint;
BEGIN
    IF holder IS NULL THEN
        RETURN NEW;  -- not written by an elected service (an operator, a lone daemon)
    END IF;
    SELECT * INTO lease FROM service_leases WHERE name = 'services' FOR SHARE;
    IF NOT FOUND OR holder IS DISTINCT FROM lease.owner OR held IS DISTINCT FROM lease.epoch
       OR lease.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION '%: not written: the services lease is held by % at epoch % (this session: % at epoch %)',
            TG_TABLE_NAME, coalesce(lease.owner, 'nobody'), coalesce(lease.epoch::text, 'none'),
            holder, coalesce(held::text, 'none')
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER bills_service_fence BEFORE INSERT ON bills
    FOR EACH ROW EXECUTE FUNCTION service_lease_fence();
CREATE TRIGGER ledger_service_fence BEFORE INSERT ON ledger
    FOR EACH ROW EXECUTE FUNCTION service_lease_fence();
CREATE TRIGGER commands_service_fence BEFORE INSERT ON commands
    FOR EACH ROW WHEN (NEW.operator = 'system') EXECUTE FUNCTION service_lease_fence();

-- Right before a clock or parameter write frame: refused unless `owner` holds the meter's channel lease
-- at `epoch` and it has not expired (a channel with no lease row is not fenced).
CREATE FUNCTION headend_write_fence(meter integer, owner text, epoch bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    lease channel_leases%ROWTYPE;
BEGIN
    SELECT l.* INTO lease FROM channel_leases l JOIN meters m ON m.channel_id = l.channel_id
    WHERE m.id = meter FOR SHARE OF l;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF owner IS DISTINCT FROM lease.owner OR epoch IS DISTINCT FROM lease.epoch
       OR lease.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION 'meter %: write not sent: the channel lease is held by % at epoch % (this daemon: % at epoch %)',
            meter, lease.owner, lease.epoch, owner, epoch
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

REVOKE ALL ON FUNCTION headend_lease_take_many(integer[], text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION headend_lease_seize(integer, text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION headend_service_take(text, text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION headend_write_fence(integer, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION headend_lease_take_many(integer[], text, interval) TO headend_daemon;
GRANT EXECUTE ON FUNCTION headend_lease_seize(integer, text, interval) TO headend_daemon;
GRANT EXECUTE ON FUNCTION headend_service_take(text, text, interval) TO headend_daemon;
GRANT EXECUTE ON FUNCTION headend_write_fence(integer, text, bigint) TO headend_daemon;
GRANT SELECT ON lease_moves, service_leases TO headend_daemon, headend_billing, headend_reporting;
