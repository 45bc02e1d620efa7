-- A membership's length is exactly the ttl its daemon asked for. headend_cluster_renew (0074) read the
-- clock twice, for renewed_at and for expires_at, so a membership lasted the ttl plus the microseconds
-- between the two reads, and the fenced-transaction bound derived from it (0085) came out one
-- millisecond over the lease (1001ms for a 1 s lease). Both now come from one reading of the clock.
CREATE OR REPLACE FUNCTION headend_cluster_renew(me text, host_name text, process integer, ttl interval)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH instant AS (SELECT clock_timestamp() AS at)
    INSERT INTO cluster_members (member, host, pid, renewed_at, expires_at)
    SELECT me, host_name, process, at, at + ttl FROM instant
    ON CONFLICT (member) DO UPDATE SET renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at;
    DELETE FROM lease_moves WHERE at < clock_timestamp() - interval '7 days';
$$;
