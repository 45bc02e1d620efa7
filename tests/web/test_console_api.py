"""``headend web`` as a real process on the test database, under the desk and reporting logins:
security headers, sign-in and its lockout, session expiry and sign-out, bearer tokens, and every
write endpoint refused (403, nothing changed) to a role without the permission and to a post
without the session's CSRF token."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from headend.operators import new_token, token_digest
from headend.store import operators as operator_store
from headend.web.identity import SESSION_COOKIE
from tests.support.console_app import console_in_process
from tests.support.operators import PASSWORD, add_operators
from tests.support.postgres import run_sync
from tests.support.web import csrf_of, running_console, sign_in, signed_in

OPERATORS = {
    "o1": "viewer",
    "o2": "operator",
    "o3": "approver",
    "o4": "cashier",
    "o5": "operator",
    "o6": "admin",
}


async def _seed(pg_dsn: str) -> int:
    """Operators, one meter with a relay, and a pending disconnect by operator 5 awaiting approval."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, **OPERATORS)
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('bus-a', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        for address, name in (("000000000001", "flat-1"), ("000000000002", "flat-2")):
            await conn.execute(
                "INSERT INTO meters (protocol, address, model, channel_id, has_relay, name) "
                "VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, true, $3)",
                address,
                channel,
                name,
            )
        await conn.execute("INSERT INTO accounts (number, name, kind) VALUES ('A-1', 'Flat one', 'prepaid')")
        until = datetime.now(UTC) + timedelta(days=1)  # token 1, for the token revocation
        await operator_store.add_token(conn, "2", "script", ["operator"], token_digest(new_token()), until)
        meter = await conn.fetchval("SELECT id FROM meters WHERE name = 'flat-1'")
        energy = await conn.fetchval(
            "INSERT INTO quantities (name) VALUES ('energy_import_kwh') RETURNING id"
        )
        source = await conn.fetchval("INSERT INTO reading_sources (name) VALUES ('poll') RETURNING id")
        suspect = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        await conn.execute(  # hold 1: a jump, its suspect reading stored
            "INSERT INTO readings (meter_id, quantity_id, ts, value, quality, source_id)"
            " VALUES ($1, $2, $3, 900.0, 'suspect', $4)",
            meter,
            energy,
            suspect,
            source,
        )
        await conn.execute(
            "INSERT INTO vee_holds (id, meter_id, quantity_id, rule, reason, first_ts, previous_value, value)"
            " VALUES (1, $1, $2, 'jump', 'jump', $3, 100.0, 900.0)",
            meter,
            energy,
            suspect,
        )
        return int(
            await conn.fetchval(
                "INSERT INTO commands (meter_id, action, cause, operator, requires_approval, expires_at) "
                "VALUES ($1, 'disconnect', 'manual', '5', true, now() + interval '1 day') RETURNING id",
                meter,
            )
        )
    finally:
        await conn.close()


def _state(pg_dsn: str) -> tuple[object, ...]:
    """Everything a write endpoint could change: tokens, commands, the audit log, meter requests,
    payments, the ledger and balances, operators (and their password hashes), VEE holds and their
    notes."""

    async def read() -> tuple[object, ...]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            commands = await conn.fetch(
                "SELECT id, state::text, approved_by, evidence::text FROM commands ORDER BY id"
            )
            audits = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action LIKE 'command.%'")
            requests = await conn.fetch(
                "SELECT id, kind, requested_by, state, range_from, range_to FROM meter_requests ORDER BY id"
            )
            money = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM payments) AS payments, (SELECT count(*) FROM ledger) AS ledger,"
                " (SELECT coalesce(sum(balance), 0)::text FROM balances) AS balances,"
                " (SELECT count(*) FROM audit_log WHERE action LIKE 'payment.%') AS audits"
            )
            people = await conn.fetch(
                "SELECT id, name, roles, active, md5(password_hash) FROM operators ORDER BY id"
            )
            tokens = await conn.fetch(
                "SELECT id, operator_id, scopes, revoked_at IS NOT NULL FROM operator_tokens ORDER BY id"
            )
            holds = await conn.fetch(
                "SELECT id, resolution, resolved_by,"
                " (SELECT count(*) FROM vee_hold_notes n WHERE n.hold_id = h.id),"
                " (SELECT count(*) FROM audit_log WHERE action LIKE 'vee.%') FROM vee_holds h ORDER BY id"
            )
            return (
                tuple(tuple(r) for r in tokens),
                tuple(tuple(r) for r in holds),
                tuple(tuple(r) for r in commands),
                audits,
                tuple(tuple(r) for r in requests),
                tuple(money),
                tuple(tuple(r) for r in people),
            )
        finally:
            await conn.close()

    return run_sync(read)


Post = Callable[[httpx.Client, int, str | None], httpx.Response]


def _form(path: str, **fields: str) -> Post:
    def post(client: httpx.Client, command: int, csrf: str | None) -> httpx.Response:
        data = {k: v for k, v in fields.items()} | ({} if csrf is None else {"csrf": csrf})
        return client.post(path.format(id=command), data=data)

    return post


def _api(path: str, body: dict[str, object] | None) -> Post:
    def post(client: httpx.Client, command: int, csrf: str | None) -> httpx.Response:
        headers = {} if csrf is None else {"x-csrf-token": csrf}
        return client.post(path.format(id=command), json=body, headers=headers)

    return post


RANGE = {"from": "2026-12-01", "to": "2026-12-02"}  # a re-collection's form fields

# every write endpoint: (name, how to post it, the one role that may, the status it then gets)
WRITES: list[tuple[str, Post, str, int]] = [
    ("form create", _form("/commands", meter="flat-2", action="disconnect", reason="tamper"), "2", 303),
    (
        "api create",
        _api("/api/commands", {"meter": "flat-2", "action": "disconnect", "reason": "x"}),
        "2",
        201,
    ),
    ("form approve", _form("/commands/{id}/approve"), "3", 303),
    ("api approve", _api("/api/commands/{id}/approve", None), "3", 200),
    ("form cancel", _form("/commands/{id}/cancel", reason="wrong meter"), "2", 303),
    ("api cancel", _api("/api/commands/{id}/cancel", {"reason": "wrong meter"}), "2", 200),
    ("form read now", _form("/meters/flat-1/read"), "2", 303),
    ("api read now", _api("/api/meters/flat-1/read", None), "2", 201),
    ("form recollect", _form("/meters/flat-1/recollect", **RANGE), "2", 303),
    (
        "api recollect",
        _api(
            "/api/meters/flat-1/recollect",
            {"since": "2026-12-01T00:00:00+08:00", "until": "2026-12-02T00:00:00+08:00"},
        ),
        "2",
        201,
    ),
    (
        "form add operator",
        _form("/operators", id="77", name="New", roles="viewer", password="pass-word-77"),
        "6",
        303,
    ),
    ("api add operator", _api("/api/operators", {"id": "77", "name": "New", "roles": ["viewer"]}), "6", 201),
    ("form disable operator", _form("/operators/5/disable", reason="left"), "6", 303),
    ("api disable operator", _api("/api/operators/5/active", {"active": False, "reason": "left"}), "6", 200),
    ("form reset password", _form("/operators/5/password"), "6", 200),
    ("api reset password", _api("/api/operators/5/password", {"password": "pass-word-55"}), "6", 200),
    ("form payment", _form("/accounts/A-1/payments", amount="120.50", reference="BANK-1"), "4", 303),
    (
        "api payment",
        _api("/api/accounts/A-1/payments", {"amount": "120.50", "reference": "BANK-1"}),
        "4",
        201,
    ),
    (
        "api v1 payment batch",
        _api("/api/v1/payments", {"payments": [{"account": "A-1", "amount": "5.00", "reference": "B-9"}]}),
        "4",
        200,
    ),
    (
        "api v1 command",
        _api("/api/v1/commands", {"meter": "flat-2", "action": "disconnect", "reason": "x"}),
        "2",
        201,
    ),
    (
        "form create token",
        _form("/operators/tokens", operator="4", label="bank", scope="payments:write", days="30"),
        "6",
        200,
    ),
    (
        "api create token",
        _api("/api/tokens", {"operator": "4", "label": "bank", "scopes": ["payments:write"]}),
        "6",
        201,
    ),
    ("form revoke token", _form("/operators/tokens/1/revoke", reason="left"), "6", 303),
    ("api revoke token", _api("/api/tokens/1/revoke", {"reason": "left"}), "6", 200),
    ("form release hold", _form("/vee/1/release", resolution="accepted", reason="heat pump"), "6", 303),
    (
        "api release hold",
        _api("/api/vee/1/release", {"resolution": "accepted", "reason": "heat pump"}),
        "6",
        200,
    ),
    ("form keep hold", _form("/vee/1/keep", note="call the tenant"), "6", 303),
    ("api keep hold", _api("/api/vee/1/keep", {"note": "call the tenant"}), "6", 200),
]


def _session(client: httpx.Client, operator: str) -> str:
    """Sign ``client`` in as ``operator`` (as a browser does); the session cookie it then holds."""
    client.cookies.clear()
    response = sign_in(client, operator, PASSWORD)
    assert response.status_code == 303, response.text[:300]
    return str(client.cookies[SESSION_COOKIE])


def _as(client: httpx.Client, session: str) -> httpx.Client:
    """``client`` carrying only the session cookie ``session``."""
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, session)
    return client


@pytest.mark.parametrize(("name", "post", "allowed", "status"), WRITES, ids=[w[0] for w in WRITES])
def test_a_write_is_refused_without_its_role_or_the_csrf_token(
    pg_dsn: str, name: str, post: Post, allowed: str, status: int
) -> None:
    """In this process (the real application and database; the process itself is tested below)."""
    command = run_sync(lambda: _seed(pg_dsn))
    before = _state(pg_dsn)
    with console_in_process(pg_dsn) as client:
        for operator in ("1", "2", "3", "4", "6"):
            if operator == allowed:
                continue
            _session(client, operator)
            refused = post(client, command, csrf_of(client))
            assert refused.status_code == 403, (operator, refused.text[:300])
            assert _state(pg_dsn) == before
        other = csrf_of(_as(client, _session(client, allowed)))  # another session's
        session = _session(client, allowed)
        for forged in (None, "", "0" * 64, other):  # none, empty, made up, another session's
            response = post(_as(client, session), command, forged)
            assert response.status_code == 403, (forged, response.text[:300])
            assert "CSRF" in response.text
            assert _state(pg_dsn) == before
        done = post(_as(client, session), command, csrf_of(client))
        assert done.status_code == status, done.text[:300]
        assert _state(pg_dsn) != before


def test_pages_carry_security_headers_and_need_a_session(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _seed(pg_dsn))
    with running_console(pg_dsn, tmp_path) as url:
        anonymous = httpx.Client(base_url=url)
        page = anonymous.get("/signin")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "style-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert (
            page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        )
        signin_cookie = page.headers["set-cookie"].lower()
        assert "httponly" in signin_cookie and "samesite=strict" in signin_cookie
        assert "<script" not in page.text and "style=" not in page.text
        assert anonymous.get("/").status_code == 303 and anonymous.get("/").headers["location"] == "/signin"
        assert anonymous.get("/api/overview").status_code == 401
        for target, location in (
            ("/commands", "/commands"),
            ("//evil.example", "/"),
            ("/\\evil.example", "/"),
        ):
            switched = anonymous.get("/lang/en", params={"next": target})
            assert switched.headers["location"] == location  # never to another host
            assert switched.headers["set-cookie"].startswith("headend_lang=en;")
        schema = anonymous.get("/api/openapi.json").json()
        assert {
            "/api/overview",
            "/api/meters/{name}",
            "/api/commands",
            "/api/commands/{command_id}/approve",
        } <= set(schema["paths"])
        client = httpx.Client(base_url=url)
        response = sign_in(client, "2", "test-password-1")
        cookie = response.headers["set-cookie"].lower()
        assert cookie.startswith("headend_session=") and "httponly" in cookie and "samesite=strict" in cookie
        assert "secure" not in cookie  # plain HTTP on localhost; `secure_cookies` behind TLS
        overview = client.get("/")
        assert overview.status_code == 200 and "bus-a" in overview.text
        assert overview.headers["content-security-policy"] == csp
    with running_console(pg_dsn, tmp_path, secure_cookies=True) as url:
        secure = sign_in(httpx.Client(base_url=url), "2", "test-password-1")
        assert "; secure" in secure.headers["set-cookie"].lower()


def test_sign_in_lockout_after_five_wrong_passwords(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _seed(pg_dsn))
    with running_console(pg_dsn, tmp_path) as url:
        client = httpx.Client(base_url=url)
        for _ in range(5):
            wrong = sign_in(client, "2", "not-the-password")
            assert wrong.status_code == 401 and "unknown, disabled or wrong password" in wrong.text
        locked = sign_in(client, "2", "test-password-1")
        assert locked.status_code == 401 and "locked until" in locked.text
        assert "headend_session" not in client.cookies
        bad_id = sign_in(client, "op2", "test-password-1")
        assert bad_id.status_code == 401 and "must be 1-8 digits" in bad_id.text
        forged = client.post("/signin", data={"operator": "3", "password": "test-password-1", "signin": "x"})
        assert forged.status_code == 403 and "headend_session" not in client.cookies

    async def lockouts() -> int:
        conn = await asyncpg.connect(pg_dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM operator_lockouts WHERE operator_id = '2'"))
        finally:
            await conn.close()

    assert run_sync(lockouts) == 1


def test_a_session_expires_when_idle_and_ends_at_sign_out(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _seed(pg_dsn))

    async def idle_for_an_hour() -> None:  # the idle limit is 30 minutes
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute("UPDATE web_sessions SET last_seen_at = now() - interval '1 hour'")
        finally:
            await conn.close()

    with running_console(pg_dsn, tmp_path) as url:
        client = signed_in(url, "2")
        assert client.get("/api/me").json()["operator_id"] == "2"
        run_sync(idle_for_an_hour)
        expired = client.get("/api/me")
        assert expired.status_code == 401 and expired.json() == {
            "detail": "the session expired: sign in again"
        }
        assert client.get("/").headers["location"] == "/signin"

        client = signed_in(url, "2")
        assert client.post("/signout", data={}).status_code == 403  # sign-out is a form post too
        assert client.get("/api/me").status_code == 200
        out = client.post("/signout", data={"csrf": csrf_of(client)})
        assert out.status_code == 303 and out.headers["location"] == "/signin"
        assert client.get("/api/me").status_code == 401

    async def ended() -> list[str]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            return [r[0] for r in await conn.fetch("SELECT ended_why FROM web_sessions ORDER BY id")]
        finally:
            await conn.close()

    assert run_sync(ended) == ["expired", "signed out"]


def test_a_sign_in_token_works_as_bearer_with_its_own_roles(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _seed(pg_dsn))
    token, viewer_token = new_token(), new_token()

    async def tokens() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await add_operators(conn, o7="viewer,operator")
            expires = datetime.now(UTC) + timedelta(days=1)
            await operator_store.add_token(conn, "2", "cis", ["operator"], token_digest(token), expires)
            # operator 7 may create commands, but this token of theirs carries only the viewer role
            await operator_store.add_token(conn, "7", "read", ["viewer"], token_digest(viewer_token), expires)
        finally:
            await conn.close()

    run_sync(tokens)
    body = {"meter": "flat-2", "action": "disconnect", "reason": "requested by CIS"}
    with running_console(pg_dsn, tmp_path) as url:
        client = httpx.Client(base_url=url)
        me = client.get("/api/me", headers={"authorization": f"Bearer {token}"}).json()
        assert me == {"operator_id": "2", "roles": ["operator"], "csrf": None}
        before = _state(pg_dsn)
        weak = client.post("/api/commands", json=body, headers={"authorization": f"Bearer {viewer_token}"})
        assert weak.status_code == 403 and _state(pg_dsn) == before
        bad = client.get("/api/me", headers={"authorization": "Bearer hdt_not-a-token"})
        assert bad.status_code == 401
        created = client.post("/api/commands", json=body, headers={"authorization": f"Bearer {token}"})
        assert created.status_code == 201, created.text
        listed = client.get(
            "/api/commands", params={"meter": "flat-2"}, headers={"authorization": f"Bearer {token}"}
        )
        assert [c["id"] for c in listed.json()["commands"]] == [created.json()["id"]]
        detail = client.get(
            f"/api/commands/{created.json()['id']}", headers={"authorization": f"Bearer {token}"}
        )
        command = detail.json()
        assert (command["state"], command["operator"], command["awaiting_approval"]) == ("pending", "2", True)
        assert command["may_approve"] == ["3 (operator 3)"]
        assert ("2", "command.requested", "requested by CIS") in [
            (a["actor"], a["action"], a["reason"]) for a in command["audit"]
        ]
        schema = client.get("/api/openapi.json").json()["components"]["schemas"]
        assert {"OverviewOut", "MeterOut", "CommandsOut", "CommandOut", "CommandRequest"} <= set(schema)


def test_a_meter_request_is_followed_by_its_id(pg_dsn: str, tmp_path: Path) -> None:
    run_sync(lambda: _seed(pg_dsn))
    with running_console(pg_dsn, tmp_path) as url:
        client = signed_in(url, "2")
        asked = client.post("/api/meters/flat-1/read", headers={"x-csrf-token": csrf_of(client)})
        assert asked.status_code == 201, asked.text
        shown = client.get(f"/api/requests/{asked.json()['id']}").json()
        assert {k: shown["request"][k] for k in ("meter", "kind", "requested_by", "state", "final")} == {
            "meter": "flat-1",
            "kind": "read",
            "requested_by": "2",
            "state": "requested",  # no daemon runs here: it waits, and its page refreshes itself
            "final": False,
        }
        assert shown["values"] == [] and shown["read_at"] is None
        page = client.get(f"/requests/{asked.json()['id']}")
        assert page.status_code == 200 and 'http-equiv="refresh"' in page.text
        assert client.get("/api/requests/999999").status_code == 404
        unknown = client.post("/api/meters/nobody/read", headers={"x-csrf-token": csrf_of(client)})
        assert unknown.status_code == 409 and "nobody" in unknown.json()["detail"]
