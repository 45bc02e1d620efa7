"""The console's API-token administration (admin role): scoped tokens made for an operator (the secret
shown once, a digest stored), listed and revoked, on the desk connection bound to the signed-in admin;
the database checks the role again and audits every change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from headend.operators import OperatorError, check_operator_id, check_scopes, new_token, token_digest
from headend.store import api_tokens
from headend.store import operators as store
from headend.store.operators import TokenRecord
from headend.web.actions import Refused
from headend.web.identity import Forbidden, Principal

MAX_DAYS = 366


async def tokens(conn: asyncpg.Connection, who: Principal) -> list[TokenRecord]:
    """Every operator's tokens (never a secret or its digest)."""
    who.require("admin")
    try:
        return await store.list_tokens(conn, None)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None


async def create(
    conn: asyncpg.Connection, who: Principal, operator_id: str, label: str, scopes: list[str], days: int
) -> tuple[int, str]:
    """A scoped token for ``operator_id`` valid ``days`` days: its id and its secret (shown once)."""
    who.require("admin")
    try:
        target = check_operator_id(operator_id)
        scope_list = check_scopes(scopes)
    except OperatorError as exc:
        raise Refused(str(exc)) from None
    if not label.strip():
        raise Refused("the token needs a name")
    if not 1 <= days <= MAX_DAYS:
        raise Refused(f"a token lasts 1 to {MAX_DAYS} days, not {days}")
    secret = new_token()
    expires_at = datetime.now(UTC) + timedelta(days=days)
    try:
        token_id = await api_tokens.add_scoped_token(
            conn, target, label.strip(), scope_list, token_digest(secret), expires_at
        )
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None
    except asyncpg.NoDataFoundError as exc:
        raise Refused(str(exc)) from None
    return token_id, secret


async def revoke(conn: asyncpg.Connection, who: Principal, token_id: int, reason: str) -> None:
    """Revoke a token at once, with a reason (audited by the database)."""
    who.require("admin")
    if not reason.strip():
        raise Refused("a reason is required")
    try:
        found = await store.revoke_token(conn, token_id, reason.strip())
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None
    if not found:
        raise Refused(f"no token {token_id}")
