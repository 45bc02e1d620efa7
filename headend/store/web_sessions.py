"""Web console sessions and binding a pooled connection to an operator (migration 0052's functions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg


@dataclass(frozen=True, slots=True)
class Binding:
    """Who a connection now acts for (``operator_id`` and ``roles``), or why it was refused."""

    operator_id: str | None
    roles: tuple[str, ...]
    refused: str | None


def _binding(row: asyncpg.Record) -> Binding:
    if row["refused"] is not None:
        return Binding(None, (), str(row["refused"]))
    return Binding(str(row["operator_id"]), tuple(row["roles"]), None)


async def start(conn: asyncpg.Connection, digest: str, idle: timedelta, lifetime: timedelta) -> datetime:
    """A new web session for the operator signed in on ``conn`` with a password; when it expires."""
    until: datetime = await conn.fetchval(
        "SELECT headend_web_session_start($1, $2, $3)", digest, idle, lifetime
    )
    return until


async def sign_in_web(conn: asyncpg.Connection, digest: str) -> Binding:
    """Bind ``conn`` to the operator of an open web session (its idle time starts again)."""
    return _binding(
        await conn.fetchrow("SELECT operator_id, roles, refused FROM headend_sign_in_web($1)", digest)
    )


async def sign_in_bearer(conn: asyncpg.Connection, digest: str) -> Binding:
    """Bind ``conn`` to the operator of a sign-in token named by its digest, with the token's roles."""
    return _binding(
        await conn.fetchrow("SELECT operator_id, roles, refused FROM headend_sign_in_bearer($1)", digest)
    )


async def end(conn: asyncpg.Connection, digest: str) -> bool:
    """End the web session ``conn`` is signed in with; False if it was not open."""
    return bool(await conn.fetchval("SELECT headend_web_session_end($1)", digest))


async def sign_out(conn: asyncpg.Connection) -> None:
    """Unbind ``conn`` from its operator."""
    await conn.execute("SELECT headend_sign_out()")


@dataclass(frozen=True, slots=True)
class LoginKind:
    """What a database login is, for refusing the wrong one at start."""

    user: str
    superuser: bool
    owner: bool
    daemon: bool
    desk: bool
    reporting: bool


async def login_kind(conn: asyncpg.Connection) -> LoginKind:
    """The connection's login: superuser, schema owner, or member of which group role."""
    row = await conn.fetchrow(
        """SELECT session_user::text AS user,
                  (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) AS superuser,
                  pg_has_role(session_user,
                              (SELECT relowner FROM pg_class WHERE oid = 'public.operators'::regclass),
                              'MEMBER') AS owner,
                  pg_has_role(session_user, 'headend_daemon', 'MEMBER') AS daemon,
                  pg_has_role(session_user, 'headend_billing', 'MEMBER') AS desk,
                  pg_has_role(session_user, 'headend_reporting', 'MEMBER') AS reporting"""
    )
    return LoginKind(**dict(row))
