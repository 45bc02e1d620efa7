-- An operator's decision to trust the next connection of a dial-in device for its archive request only
-- (issue 21, `headend channels trust`): a replacement concentrator arrives with an empty archive, so
-- the archive check closes it as an impostor and `concentrator archive push` could never fix it. An
-- empty archive proves nothing, so the head-end does not accept it by itself: a signed-in admin grants
-- one device a bounded window, with a reason.
--
-- * Inserted only by a signed-in admin (or the schema owner), as themselves; granted_at is now() and
--   expires_at at most 30 minutes later. Nobody deletes one.
-- * The daemon records the one connection that used it (used_at, used_peer), once; an admin may
--   revoke an unused grant (revoked_at, revoked_by = the signed-in admin). Nothing else changes.
-- * Every insert and change is in audit_log (action 'channel.trust.<granted|used|revoked>').

CREATE TABLE channel_trusts (
    id bigserial PRIMARY KEY,
    channel_id integer NOT NULL REFERENCES channels (id),
    granted_by text NOT NULL REFERENCES operators (id),
    reason text NOT NULL CHECK (length(btrim(reason)) BETWEEN 1 AND 500),
    granted_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    used_peer text CHECK (length(used_peer) <= 200),
    revoked_at timestamptz,
    revoked_by text REFERENCES operators (id),
    CHECK (expires_at > granted_at AND expires_at <= granted_at + interval '30 minutes'),
    CHECK ((used_at IS NULL) = (used_peer IS NULL)),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
CREATE INDEX channel_trusts_open_idx ON channel_trusts (channel_id) WHERE used_at IS NULL AND revoked_at IS NULL;

CREATE FUNCTION channel_trusts_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE me text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        me := headend_require_role('admin', 'trusting a dial-in device');
        IF NOT headend_is_owner() AND NEW.granted_by IS DISTINCT FROM me THEN
            RAISE EXCEPTION 'channel trust: granted_by % is not the signed-in operator', NEW.granted_by
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.used_at IS NOT NULL OR NEW.revoked_at IS NOT NULL THEN
            RAISE EXCEPTION 'channel trust: a new grant is unused and not revoked'
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.expires_at := now() + least(NEW.expires_at - NEW.granted_at, interval '30 minutes');
        NEW.granted_at := now();
        RETURN NEW;
    END IF;
    IF (NEW.channel_id, NEW.granted_by, NEW.reason, NEW.granted_at, NEW.expires_at)
       IS DISTINCT FROM (OLD.channel_id, OLD.granted_by, OLD.reason, OLD.granted_at, OLD.expires_at) THEN
        RAISE EXCEPTION 'channel trust %: only its use or revocation is recorded', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.used_at IS NOT NULL OR OLD.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'channel trust %: already used or revoked', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.used_at IS NOT NULL AND NEW.revoked_at IS NULL THEN
        IF NOT headend_is_owner() AND NOT headend_is_daemon() THEN
            RAISE EXCEPTION 'channel trust %: only the daemon records its use', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        NEW.used_at := least(now(), OLD.expires_at);
        RETURN NEW;
    END IF;
    IF NEW.revoked_at IS NOT NULL AND NEW.used_at IS NULL THEN
        me := headend_require_role('admin', 'revoking a trust');
        IF NOT headend_is_owner() AND NEW.revoked_by IS DISTINCT FROM me THEN
            RAISE EXCEPTION 'channel trust %: revoked_by % is not the signed-in operator', OLD.id, NEW.revoked_by
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        NEW.revoked_at := now();
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'channel trust %: record its use or its revocation, one at a time', OLD.id
        USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER channel_trusts_guard BEFORE INSERT OR UPDATE ON channel_trusts
    FOR EACH ROW EXECUTE FUNCTION channel_trusts_guard();

CREATE FUNCTION channel_trusts_audit() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO audit_log (actor, action, entity, entity_id, reason, details)
    VALUES (
        CASE WHEN TG_OP = 'INSERT' THEN NEW.granted_by
             WHEN NEW.revoked_at IS NOT NULL THEN NEW.revoked_by
             ELSE 'system' END,
        'channel.trust.' || CASE WHEN TG_OP = 'INSERT' THEN 'granted'
                                 WHEN NEW.revoked_at IS NOT NULL THEN 'revoked' ELSE 'used' END,
        'channel',
        NEW.channel_id::text,
        NEW.reason,
        jsonb_build_object('trust', NEW.id, 'expires_at', NEW.expires_at, 'used_peer', NEW.used_peer));
    RETURN NULL;
END $$;
CREATE TRIGGER channel_trusts_audit AFTER INSERT OR UPDATE ON channel_trusts
    FOR EACH ROW EXECUTE FUNCTION channel_trusts_audit();

REVOKE ALL ON channel_trusts FROM PUBLIC;
GRANT SELECT ON channel_trusts TO headend_daemon, headend_billing, headend_reporting;
GRANT INSERT, UPDATE ON channel_trusts TO headend_billing;
GRANT UPDATE ON channel_trusts TO headend_daemon;
GRANT USAGE ON SEQUENCE channel_trusts_id_seq TO headend_billing;
