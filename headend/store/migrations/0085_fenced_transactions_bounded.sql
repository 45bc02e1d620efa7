-- A fenced transaction may not hold its lease locked without bound (issue 26, docs/scaling.md).
-- The fences (0065, 0074) lock the lease they check for share until their transaction ends; the other
-- members' renewals skip a lease so locked (0078), so a member frozen (SIGSTOP, a stalled VM) inside
-- such a transaction kept that channel, or the services, from every other member until it woke or the
-- server dropped its session. Now a fence that passes also sets, for the rest of its transaction only
-- (SET LOCAL), idle_in_transaction_session_timeout to the holder's lease length (its membership's ttl;
-- the time its lease had left, for a holder with no membership row): a fenced transaction the server
-- sees idle that long (a frozen or stalled member: a live one has nothing to await between its
-- statements but its own event loop, which renews its leases too) loses its session; the server rolls
-- it back (the command stays pending, nothing is sent under that epoch) and the lock goes, so the lease
-- moves at the next renewal after it expired. A lower timeout the session already has is kept. Sessions
-- that pass no fence (an operator, a lone daemon, every other transaction of the daemon) are not
-- touched.
CREATE FUNCTION headend_bound_fenced_idle(holder text, lease_left interval)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    bound interval := coalesce(
        (SELECT expires_at - renewed_at FROM cluster_members WHERE member = holder), lease_left);
    now_set interval := current_setting('idle_in_transaction_session_timeout')::interval;
BEGIN
    IF now_set > interval '0' AND now_set <= bound THEN
        RETURN;
    END IF;
    PERFORM set_config('idle_in_transaction_session_timeout',
                       greatest(1, ceil(extract(epoch FROM bound) * 1000))::bigint::text, true);
END $$;
REVOKE ALL ON FUNCTION headend_bound_fenced_idle(text, interval) FROM PUBLIC;

CREATE OR REPLACE FUNCTION commands_lease_fence() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
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
    PERFORM headend_bound_fenced_idle(holder, lease.expires_at - clock_timestamp());
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION service_lease_fence() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
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
    PERFORM headend_bound_fenced_idle(holder, lease.expires_at - clock_timestamp());
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION headend_write_fence(meter integer, owner text, epoch bigint)
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
    PERFORM headend_bound_fenced_idle(owner, lease.expires_at - clock_timestamp());
END $$;
