"""Scoped API tokens (migration 0066): made by an admin for an operator, and a connection bound to the
operator of a token named by its digest, with the token's scopes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class ApiBinding:
    """Who a connection now acts for, with the token's roles and scopes (None: an unscoped token), or
    why it was refused."""

    operator_id: str | None
    roles: tuple[str, ...]
    scopes: tuple[str, ...] | None
    refused: str | None


async def add_scoped_token(
    conn: asyncpg.Connection,
    operator_id: str,
    label: str,
    scopes: Sequence[str],
    digest: str,
    expires_at: datetime,
) -> int:
    """Store a new scoped token's digest for ``operator_id`` (an admin signed in on ``conn``); its id.
    Its roles are the ones its scopes need, which the operator must hold (else the database refuses)."""
    return int(
        await conn.fetchval(
            "SELECT headend_token_add_scoped($1, $2, $3::text[], $4, $5)",
            operator_id,
            label,
            list(scopes),
            digest,
            expires_at,
        )
    )


async def sign_in_api(conn: asyncpg.Connection, digest: str) -> ApiBinding:
    """Bind ``conn`` to the operator of the token with ``digest``, acting with the token's roles."""
    row = await conn.fetchrow(
        "SELECT operator_id, roles, scopes, refused FROM headend_sign_in_api($1)", digest
    )
    if row["refused"] is not None:
        return ApiBinding(None, (), None, str(row["refused"]))
    scopes = None if row["scopes"] is None else tuple(row["scopes"])
    return ApiBinding(str(row["operator_id"]), tuple(row["roles"]), scopes, None)
