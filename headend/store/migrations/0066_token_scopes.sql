-- Scoped API tokens for a billing / CIS system (issue 23, integration API). A token may carry scopes
-- (readings:read, commands:read, payments:write, commands:write); an admin makes one for an operator.
-- A scope only narrows: a scoped token's roles are the roles its write scopes need (payments:write:
-- cashier, commands:write: operator), each of which the operator must hold, and a connection signed in
-- with it acts with those roles only, so the database refuses any other write made with it (through the
-- API, the CLI or psql). A token with read scopes only acts with no role at all. Tokens without scopes
-- (0016) keep their roles as before. The scopes of the token a connection signed in with are kept on its
-- session, for the API to refuse an endpoint the token does not cover (403) before anything is done.

ALTER TABLE operator_tokens ADD COLUMN scopes text[]
    CHECK (scopes IS NULL OR (cardinality(scopes) > 0
           AND scopes <@ ARRAY['readings:read', 'commands:read', 'payments:write', 'commands:write']::text[]));
ALTER TABLE operator_tokens DROP CONSTRAINT operator_tokens_roles_check;
ALTER TABLE operator_tokens ADD CONSTRAINT operator_tokens_roles_check
    CHECK (roles <@ ARRAY['viewer', 'operator', 'approver', 'cashier', 'admin']::text[]
           AND (cardinality(roles) > 0 OR scopes IS NOT NULL));
ALTER TABLE operator_sessions ADD COLUMN scopes text[];  -- NULL: not a scoped token's session

-- The roles a set of scopes needs (the write scopes' roles; read scopes need none).
CREATE FUNCTION headend_scope_roles(p_scopes text[]) RETURNS text[] LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog AS $$
    SELECT ARRAY(SELECT DISTINCT r FROM unnest(p_scopes) AS s,
                 LATERAL (SELECT CASE s WHEN 'payments:write' THEN 'cashier'
                                        WHEN 'commands:write' THEN 'operator' END AS r) x
                 WHERE r IS NOT NULL ORDER BY r)
$$;

-- A new scoped token for p_operator, made by an admin: its roles are the ones its scopes need, each
-- held by the operator.
CREATE FUNCTION headend_token_add_scoped(p_operator text, p_label text, p_scopes text[], p_digest text,
                                         p_expires_at timestamptz) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    me text := headend_require_role('admin', 'making an API token');
    need text[] := headend_scope_roles(p_scopes);
    held text[];
    new_id bigint;
BEGIN
    SELECT roles INTO held FROM operators WHERE id = p_operator AND active;
    IF held IS NULL THEN
        RAISE EXCEPTION 'no active operator %', p_operator USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT need <@ held THEN
        RAISE EXCEPTION 'operator % does not hold the % role the scopes need (holds %)', p_operator,
            array_to_string(ARRAY(SELECT unnest(need) EXCEPT SELECT unnest(held)), ', '),
            array_to_string(held, ', ') USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO operator_tokens (operator_id, label, roles, scopes, digest, created_by, expires_at)
    VALUES (p_operator, btrim(p_label), need,
            ARRAY(SELECT DISTINCT s FROM unnest(p_scopes) AS s ORDER BY s), p_digest, coalesce(me, session_user::text),
            p_expires_at)
    RETURNING id INTO new_id;
    INSERT INTO audit_log (actor, action, entity, entity_id, reason, details)
    VALUES (coalesce(me, session_user::text), 'operator.token_added', 'operator', p_operator, btrim(p_label),
            jsonb_build_object('token', new_id, 'roles', to_jsonb(need), 'scopes', to_jsonb(p_scopes),
                               'expires_at', p_expires_at));
    RETURN new_id;
END $$;

-- As 0017, and: a scoped token signs in with the roles its scopes need that the operator still holds
-- (possibly none), and its scopes are kept on the session.
CREATE OR REPLACE FUNCTION headend_sign_in_token(p_operator text, p_digest text, OUT roles text[], OUT refused text)
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
    IF tok.scopes IS NULL AND cardinality(roles) = 0 THEN
        refused := format('token %s (%s): the operator holds none of its roles any more', tok.id, tok.label);
        roles := NULL;
        RETURN;
    END IF;
    UPDATE operator_tokens SET last_used_at = now() WHERE id = tok.id;
    PERFORM headend_bind_session(p_operator, roles);
    UPDATE operator_sessions SET scopes = tok.scopes WHERE backend_pid = pg_backend_pid();
END $$;

-- A token named by its digest alone, as headend_sign_in_bearer (0052), with the token's scopes (NULL:
-- an unscoped sign-in token).
CREATE FUNCTION headend_sign_in_api(p_digest text, OUT operator_id text, OUT roles text[], OUT scopes text[],
                                    OUT refused text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE owner_id text;
BEGIN
    SELECT t.operator_id, t.scopes INTO owner_id, scopes FROM operator_tokens t WHERE t.digest = p_digest;
    IF owner_id IS NULL THEN
        refused := 'unknown token, or a disabled operator';
        scopes := NULL;
        RETURN;
    END IF;
    SELECT s.roles, s.refused INTO roles, refused FROM headend_sign_in_token(owner_id, p_digest) s;
    IF refused IS NULL THEN
        operator_id := owner_id;
    ELSE
        scopes := NULL;
    END IF;
END $$;

-- Tokens as 0016 lists them, with their scopes.
DROP FUNCTION headend_tokens(text);
CREATE FUNCTION headend_tokens(p_operator text)
    RETURNS TABLE (id bigint, operator_id text, label text, roles text[], scopes text[], created_by text,
                   created_at timestamptz, expires_at timestamptz, revoked_at timestamptz,
                   last_used_at timestamptz)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE me text := headend_current_operator();
BEGIN
    IF p_operator IS NULL OR me IS DISTINCT FROM p_operator THEN
        PERFORM headend_require_role('admin', 'listing another operator''s tokens');
    END IF;
    RETURN QUERY SELECT t.id, t.operator_id, t.label, t.roles, t.scopes, t.created_by, t.created_at,
                        t.expires_at, t.revoked_at, t.last_used_at
                 FROM operator_tokens t
                 WHERE p_operator IS NULL OR t.operator_id = p_operator ORDER BY t.id;
END $$;

REVOKE EXECUTE ON FUNCTION headend_token_add_scoped(text, text, text[], text, timestamptz),
    headend_sign_in_api(text), headend_tokens(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION headend_token_add_scoped(text, text, text[], text, timestamptz),
    headend_tokens(text) TO headend_daemon, headend_billing;
GRANT EXECUTE ON FUNCTION headend_sign_in_api(text) TO headend_billing;
