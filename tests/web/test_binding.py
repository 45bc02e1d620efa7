"""The database side of the console's sessions, under the desk login: a web session binds a pooled
connection to its operator exactly as a CLI sign-in does (the database refuses a viewer's command),
sign-out unbinds it, and only a password sign-in starts a web session."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from headend.control.manual import request_command
from headend.operators import authenticate, new_token, token_digest
from headend.store import operators as operator_store
from headend.store import web_sessions
from tests.support.logins import desk_dsn, report_dsn
from tests.support.operators import PASSWORD, add_operators

HOUR = timedelta(hours=1)


def _digest() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


async def _meter(owner: asyncpg.Connection) -> None:
    channel = await owner.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
    )
    await owner.execute(
        "INSERT INTO meters (protocol, address, model, channel_id, has_relay, name) "
        "VALUES ('dlt645-2007', '000000000001', 'dlt645-generic', $1, true, 'flat-1')",
        channel,
    )


async def test_a_web_session_binds_like_a_sign_in_and_sign_out_unbinds(pg_dsn: str) -> None:
    owner = await asyncpg.connect(pg_dsn)
    desk = await asyncpg.connect(desk_dsn(pg_dsn))
    try:
        await add_operators(owner, o1="viewer", o2="operator")
        await _meter(owner)
        viewer, operator = _digest(), _digest()
        for who, digest in (("1", viewer), ("2", operator)):
            await authenticate(desk, who, PASSWORD, None)
            await web_sessions.start(desk, digest, HOUR, 8 * HOUR)
            await web_sessions.sign_out(desk)
        assert await desk.fetchval("SELECT headend_current_operator()") is None

        bound = await web_sessions.sign_in_web(desk, viewer)
        assert (bound.operator_id, bound.roles, bound.refused) == ("1", ("viewer",), None)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # the web layer's check left out
            await request_command(
                desk, "flat-1", "disconnect", operator="1", reason="r", now=datetime.now(UTC)
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # nor under another operator's name
            await request_command(
                desk, "flat-1", "disconnect", operator="2", reason="r", now=datetime.now(UTC)
            )
        await web_sessions.sign_out(desk)
        assert await desk.fetchval("SELECT headend_current_operator()") is None

        assert (await web_sessions.sign_in_web(desk, operator)).operator_id == "2"
        command = await request_command(
            desk, "flat-1", "disconnect", operator="2", reason="r", now=datetime.now(UTC)
        )
        assert await owner.fetchval("SELECT operator FROM commands WHERE id = $1", command) == "2"
        assert await web_sessions.end(desk, operator)
        await web_sessions.sign_out(desk)
        assert (
            await web_sessions.sign_in_web(desk, operator)
        ).refused == "not signed in (unknown or ended session)"
        assert (
            await web_sessions.sign_in_web(desk, _digest())
        ).refused == "not signed in (unknown or ended session)"
        assert await desk.fetchval("SELECT headend_current_operator()") is None
        audit = await owner.fetch(
            "SELECT actor, action FROM audit_log WHERE action LIKE 'operator.web%' ORDER BY id"
        )
        assert [tuple(r) for r in audit] == [
            ("1", "operator.web_signed_in"),
            ("2", "operator.web_signed_in"),
            ("2", "operator.web_signed_out"),
        ]
    finally:
        await desk.close()
        await owner.close()


async def test_only_a_password_sign_in_starts_a_session_and_no_other_login_can(pg_dsn: str) -> None:
    owner = await asyncpg.connect(pg_dsn)
    desk = await asyncpg.connect(desk_dsn(pg_dsn))
    report = await asyncpg.connect(report_dsn(pg_dsn))
    try:
        await add_operators(owner, o2="operator")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="after a password sign-in"):
            await web_sessions.start(desk, _digest(), HOUR, HOUR)
        token = new_token()
        await operator_store.add_token(
            owner, "2", "cis", ["operator"], token_digest(token), datetime.now(UTC) + timedelta(days=1)
        )
        bound = await web_sessions.sign_in_bearer(desk, token_digest(token))
        assert (bound.operator_id, bound.roles) == ("2", ("operator",))
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="after a password sign-in"):
            await web_sessions.start(desk, _digest(), HOUR, HOUR)  # a token does not mint sessions
        for refused in ("SELECT headend_sign_in_web($1)", "SELECT headend_sign_in_bearer($1)"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await report.execute(refused, _digest())
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await report.fetch("SELECT * FROM web_sessions")
        with pytest.raises(asyncpg.CheckViolationError):  # a session lasts a day at most
            await authenticate(desk, "2", PASSWORD, None)
            await web_sessions.start(desk, _digest(), HOUR, 25 * HOUR)
    finally:
        await report.close()
        await desk.close()
        await owner.close()
