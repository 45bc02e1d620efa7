-- Web console sessions (issue 23). A browser signs in once with 工号 and password (headend_sign_in, with
-- its lockout); the console then keeps a session row here and gives the browser only a random id in a
-- cookie (256 bits; the row holds its SHA-256 digest). Each request binds the console's pooled desk
-- connection to the session's operator with headend_sign_in_web, exactly as a CLI sign-in binds it, so
-- the database refuses what the operator's roles do not allow even if the web layer forgot a check, and
-- headend_sign_out unbinds it before the connection goes back to the pool. A session ends when signed
-- out, after `idle_for` without a request, or at `expires_at`, whichever comes first. A script's sign-in
-- token (0016) works as `Authorization: Bearer` through headend_sign_in_bearer: the token alone names
-- its operator.

CREATE TABLE web_sessions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest       text NOT NULL UNIQUE CHECK (digest ~ '^[0-9a-f]{64}$'),
    operator_id  text NOT NULL REFERENCES operators(id),
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    idle_for     interval NOT NULL CHECK (idle_for > interval '0' AND idle_for <= interval '24 hours'),
    expires_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    ended_why    text,
    CHECK (expires_at > started_at AND expires_at <= started_at + interval '24 hours')
);
REVOKE ALL ON web_sessions FROM PUBLIC, headend_daemon, headend_billing, headend_reporting;

-- Start a web session for the operator this connection just signed in with a password (not a token).
CREATE FUNCTION headend_web_session_start(p_digest text, p_idle interval, p_lifetime interval)
    RETURNS timestamptz LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    me text := headend_current_operator();
    until timestamptz := now() + p_lifetime;
BEGIN
    IF me IS NULL OR NOT EXISTS (
        SELECT 1 FROM operator_sessions s WHERE s.backend_pid = pg_backend_pid()
           AND s.nonce = current_setting('headend.session', true) AND s.roles IS NULL) THEN
        RAISE EXCEPTION 'a web session starts only after a password sign-in on this connection'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO web_sessions (digest, operator_id, idle_for, expires_at)
    VALUES (p_digest, me, p_idle, until);
    INSERT INTO audit_log (actor, action, entity, entity_id, reason)
    VALUES (me, 'operator.web_signed_in', 'operator', me, 'web console');
    RETURN until;
END $$;

-- Bind this connection to a web session's operator: ``operator_id`` and ``roles``, or ``refused``.
CREATE FUNCTION headend_sign_in_web(p_digest text, OUT operator_id text, OUT roles text[], OUT refused text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    ws web_sessions%ROWTYPE;
    held text[];
BEGIN
    SELECT * INTO ws FROM web_sessions w WHERE w.digest = p_digest;
    IF NOT FOUND OR ws.ended_at IS NOT NULL THEN
        refused := 'not signed in (unknown or ended session)';
        RETURN;
    END IF;
    IF ws.expires_at <= now() OR ws.last_seen_at + ws.idle_for <= now() THEN
        UPDATE web_sessions SET ended_at = now(), ended_why = 'expired' WHERE id = ws.id;
        refused := 'the session expired: sign in again';
        RETURN;
    END IF;
    SELECT o.roles INTO held FROM operators o WHERE o.id = ws.operator_id AND o.active;
    IF held IS NULL THEN
        UPDATE web_sessions SET ended_at = now(), ended_why = 'operator disabled' WHERE id = ws.id;
        refused := 'the operator was disabled';
        RETURN;
    END IF;
    UPDATE web_sessions SET last_seen_at = now() WHERE id = ws.id;
    PERFORM headend_bind_session(ws.operator_id, NULL);
    operator_id := ws.operator_id;
    roles := held;
END $$;

-- End the web session this connection is signed in with (sign-out); false if it was not open.
CREATE FUNCTION headend_web_session_end(p_digest text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE me text := headend_current_operator();
BEGIN
    UPDATE web_sessions SET ended_at = now(), ended_why = 'signed out'
     WHERE digest = p_digest AND operator_id = me AND ended_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO audit_log (actor, action, entity, entity_id, reason)
    VALUES (me, 'operator.web_signed_out', 'operator', me, 'web console');
    RETURN true;
END $$;

-- A sign-in token named by its digest alone (an API client sends only the token).
CREATE FUNCTION headend_sign_in_bearer(p_digest text, OUT operator_id text, OUT roles text[], OUT refused text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE owner_id text;
BEGIN
    SELECT t.operator_id INTO owner_id FROM operator_tokens t WHERE t.digest = p_digest;
    IF owner_id IS NULL THEN
        refused := 'unknown token, or a disabled operator';
        RETURN;
    END IF;
    SELECT s.roles, s.refused INTO roles, refused FROM headend_sign_in_token(owner_id, p_digest) s;
    IF refused IS NULL THEN
        operator_id := owner_id;
    END IF;
END $$;

-- Unbind this connection from its operator (before a pooled connection is reused).
CREATE FUNCTION headend_sign_out() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
BEGIN
    DELETE FROM operator_sessions WHERE backend_pid = pg_backend_pid();
    PERFORM set_config('headend.session', '', false);
END $$;

REVOKE EXECUTE ON FUNCTION headend_web_session_start(text, interval, interval), headend_sign_in_web(text),
    headend_web_session_end(text), headend_sign_in_bearer(text), headend_sign_out() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION headend_web_session_start(text, interval, interval), headend_sign_in_web(text),
    headend_web_session_end(text), headend_sign_in_bearer(text), headend_sign_out() TO headend_billing;
