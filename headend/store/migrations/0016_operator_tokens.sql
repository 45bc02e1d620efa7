-- Sign-in tokens for scripts (a nightly payment import, a monitoring job): a script signs in as an
-- operator with a token instead of that person's password. A token carries a subset of the operator's
-- roles, expires (at most a year after it was made), can be revoked, and is stored as its SHA-256
-- digest only (a token is 256 random bits: a slow hash adds nothing). The operator themself or an admin
-- makes and revokes tokens; both are audited. A wrong token is refused but not counted towards the
-- password lockout (an old token left in a cron job must not lock its person out).

CREATE TABLE operator_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operator_id  text NOT NULL REFERENCES operators(id),
    label        text NOT NULL CHECK (btrim(label) <> '' AND length(label) <= 200),
    roles        text[] NOT NULL CHECK (cardinality(roles) > 0
                     AND roles <@ ARRAY['viewer', 'operator', 'approver', 'cashier', 'admin']::text[]),
    digest       text NOT NULL UNIQUE CHECK (digest ~ '^[0-9a-f]{64}$'),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CHECK (expires_at > created_at AND expires_at <= created_at + interval '366 days')
);
REVOKE ALL ON operator_tokens FROM PUBLIC, headend_daemon, headend_billing, headend_reporting;

-- A session signed in with a token acts with the token's roles only: the database enforces it.
ALTER TABLE operator_sessions ADD COLUMN roles text[];  -- NULL: every role of the operator (password)

CREATE FUNCTION headend_session_allows(p_role text) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public AS $$
    SELECT coalesce((SELECT s.roles IS NULL OR p_role = ANY (s.roles) FROM operator_sessions s
                     WHERE s.backend_pid = pg_backend_pid() AND s.backend_start = headend_backend_start()),
                    false)
$$;

-- Whether the operator holds the role; on this connection's own operator, as far as its session allows.
CREATE OR REPLACE FUNCTION headend_operator_holds(p_operator text, p_role text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT coalesce((SELECT active AND p_role = ANY (roles) FROM operators WHERE id = p_operator), false)
       AND (p_operator IS DISTINCT FROM headend_current_operator() OR headend_session_allows(p_role))
$$;

-- Bind this connection to the token's operator: ``roles`` (the token's roles the operator still holds)
-- or ``refused``.
CREATE FUNCTION headend_sign_in_token(p_operator text, p_digest text, OUT roles text[], OUT refused text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    tok operator_tokens%ROWTYPE;
    held text[];
BEGIN
    SELECT t.* INTO tok FROM operator_tokens t WHERE t.digest = p_digest AND t.operator_id = p_operator;
    SELECT o.roles INTO held FROM operators o WHERE o.id = p_operator AND o.active;
    IF tok.id IS NULL OR held IS NULL THEN
        refused := 'unknown token, or a disabled operator';
        RETURN;
    END IF;
    IF tok.revoked_at IS NOT NULL THEN
        refused := format('token %s (%s) was revoked', tok.id, tok.label);
        RETURN;
    END IF;
    IF tok.expires_at <= now() THEN
        refused := format('token %s (%s) expired at %s', tok.id, tok.label,
                          to_char(tok.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'));
        RETURN;
    END IF;
    roles := ARRAY(SELECT r FROM unnest(tok.roles) AS r WHERE r = ANY (held));
    IF cardinality(roles) = 0 THEN
        refused := format('token %s (%s): the operator holds none of its roles any more', tok.id, tok.label);
        roles := NULL;
        RETURN;
    END IF;
    UPDATE operator_tokens SET last_used_at = now() WHERE id = tok.id;
    DELETE FROM operator_sessions WHERE backend_pid = pg_backend_pid();
    INSERT INTO operator_sessions (backend_pid, backend_start, operator_id, roles)
    VALUES (pg_backend_pid(), headend_backend_start(), p_operator, roles);
END $$;

-- A new token for p_operator: the operator themself (signed in) or an admin; roles the operator holds.
CREATE FUNCTION headend_token_add(p_operator text, p_label text, p_roles text[], p_digest text,
                                  p_expires_at timestamptz) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    me text := headend_current_operator();
    held text[];
    new_id bigint;
BEGIN
    IF me IS DISTINCT FROM p_operator THEN
        me := headend_require_role('admin', 'making a token for another operator');
    END IF;
    SELECT roles INTO held FROM operators WHERE id = p_operator AND active;
    IF held IS NULL THEN
        RAISE EXCEPTION 'no active operator %', p_operator USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT p_roles <@ held THEN
        RAISE EXCEPTION 'operator % does not hold every role of the token (holds %)', p_operator,
            array_to_string(held, ', ') USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO operator_tokens (operator_id, label, roles, digest, created_by, expires_at)
    VALUES (p_operator, btrim(p_label), p_roles, p_digest, coalesce(me, session_user::text), p_expires_at)
    RETURNING id INTO new_id;
    INSERT INTO audit_log (actor, action, entity, entity_id, reason, details)
    VALUES (coalesce(me, session_user::text), 'operator.token_added', 'operator', p_operator, btrim(p_label),
            jsonb_build_object('token', new_id, 'roles', to_jsonb(p_roles), 'expires_at', p_expires_at));
    RETURN new_id;
END $$;

-- Revoke a token: its operator (signed in) or an admin. False if there is no such token.
CREATE FUNCTION headend_token_revoke(p_token bigint, p_reason text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    me text := headend_current_operator();
    owner_id text;
BEGIN
    SELECT operator_id INTO owner_id FROM operator_tokens WHERE id = p_token;
    IF owner_id IS NULL THEN
        RETURN false;
    END IF;
    IF me IS DISTINCT FROM owner_id THEN
        me := headend_require_role('admin', 'revoking another operator''s token');
    END IF;
    UPDATE operator_tokens SET revoked_at = now() WHERE id = p_token AND revoked_at IS NULL;
    INSERT INTO audit_log (actor, action, entity, entity_id, reason, details)
    VALUES (coalesce(me, session_user::text), 'operator.token_revoked', 'operator', owner_id, p_reason,
            jsonb_build_object('token', p_token));
    RETURN true;
END $$;

-- Tokens without their digests: an operator's own, or everyone's for an admin.
CREATE FUNCTION headend_tokens(p_operator text)
    RETURNS TABLE (id bigint, operator_id text, label text, roles text[], created_by text,
                   created_at timestamptz, expires_at timestamptz, revoked_at timestamptz,
                   last_used_at timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE me text := headend_current_operator();
BEGIN
    IF p_operator IS NULL OR me IS DISTINCT FROM p_operator THEN
        PERFORM headend_require_role('admin', 'listing another operator''s tokens');
    END IF;
    RETURN QUERY SELECT t.id, t.operator_id, t.label, t.roles, t.created_by, t.created_at, t.expires_at,
                        t.revoked_at, t.last_used_at
                 FROM operator_tokens t
                 WHERE p_operator IS NULL OR t.operator_id = p_operator ORDER BY t.id;
END $$;

REVOKE EXECUTE ON FUNCTION headend_session_allows(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION headend_session_allows(text) TO headend_daemon, headend_billing;
REVOKE EXECUTE ON FUNCTION headend_sign_in_token(text, text),
    headend_token_add(text, text, text[], text, timestamptz), headend_token_revoke(bigint, text),
    headend_tokens(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION headend_sign_in_token(text, text),
    headend_token_add(text, text, text[], text, timestamptz), headend_token_revoke(bigint, text),
    headend_tokens(text) TO headend_daemon, headend_billing;
