"""Operator records and connection authentication (SQL of migration 0008's functions and tables)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class OperatorRecord:
    """One operator as listed (never with the password hash)."""

    id: str
    name: str
    roles: list[str]
    active: bool
    created_by: str
    created_at: datetime
    failed_sign_ins: int
    locked_until: datetime | None


async def password_params(conn: asyncpg.Connection, operator_id: str) -> str | None:
    """The argon2 parameters and salt of an active operator (PHC string without the hash), or None."""
    params: str | None = await conn.fetchval("SELECT headend_password_params($1)", operator_id)
    return params


async def sign_in(conn: asyncpg.Connection, operator_id: str, proof: str) -> tuple[list[str], str | None]:
    """Bind ``conn`` to the operator: (their roles, None), or ([], why it was refused). Wrong proofs
    are counted by the database, which locks the operator after five in a row (migration 0015)."""
    row = await conn.fetchrow("SELECT roles, refused FROM headend_sign_in($1, $2)", operator_id, proof)
    if row["refused"] is not None:
        return [], str(row["refused"])
    return list(row["roles"]), None


async def unlock(conn: asyncpg.Connection, operator_id: str, reason: str) -> bool:
    """End an operator's sign-in lock (an admin); False if there is no such operator."""
    return bool(await conn.fetchval("SELECT headend_operator_unlock($1, $2)", operator_id, reason))


async def operator_count(conn: asyncpg.Connection) -> int:
    """How many operators exist (active or not)."""
    return int(await conn.fetchval("SELECT count(*) FROM operators"))


async def add_operator(
    conn: asyncpg.Connection, operator_id: str, name: str, roles: list[str], password_hash: str
) -> None:
    """Create an operator (the database checks who may)."""
    await conn.execute(
        "SELECT headend_operator_add($1, $2, $3::text[], $4)", operator_id, name, roles, password_hash
    )


async def set_active(conn: asyncpg.Connection, operator_id: str, active: bool, reason: str) -> bool:
    """Enable or disable an operator; False if there is no such operator."""
    return bool(
        await conn.fetchval("SELECT headend_operator_set_active($1, $2, $3)", operator_id, active, reason)
    )


async def set_password(conn: asyncpg.Connection, operator_id: str, password_hash: str) -> bool:
    """Replace an operator's password hash; False if there is no such operator."""
    changed = await conn.fetchval("SELECT headend_operator_set_password($1, $2)", operator_id, password_hash)
    return bool(changed)


async def list_operators(conn: asyncpg.Connection) -> list[OperatorRecord]:
    """Every operator, by id."""
    rows = await conn.fetch(
        "SELECT id, name, roles, active, created_by, created_at, failed_sign_ins,"
        " locked_until FROM operators ORDER BY id::bigint"
    )
    return [OperatorRecord(**dict(r)) for r in rows]


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A sign-in token as listed (never its digest)."""

    id: int
    operator_id: str
    label: str
    roles: list[str]
    scopes: list[str] | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


async def sign_in_token(
    conn: asyncpg.Connection, operator_id: str, digest: str
) -> tuple[list[str], str | None]:
    """Bind ``conn`` to the operator of a token: (the token's roles the operator holds, None), or
    ([], why it was refused) (migration 0016)."""
    row = await conn.fetchrow("SELECT roles, refused FROM headend_sign_in_token($1, $2)", operator_id, digest)
    if row["refused"] is not None:
        return [], str(row["refused"])
    return list(row["roles"]), None


async def add_token(
    conn: asyncpg.Connection,
    operator_id: str,
    label: str,
    roles: list[str],
    digest: str,
    expires_at: datetime,
) -> int:
    """Store a new token's digest for ``operator_id`` (its operator or an admin); its id."""
    return int(
        await conn.fetchval(
            "SELECT headend_token_add($1, $2, $3::text[], $4, $5)",
            operator_id,
            label,
            roles,
            digest,
            expires_at,
        )
    )


async def revoke_token(conn: asyncpg.Connection, token_id: int, reason: str) -> bool:
    """Revoke a token (its operator or an admin); False if there is no such token."""
    return bool(await conn.fetchval("SELECT headend_token_revoke($1, $2)", token_id, reason))


async def list_tokens(conn: asyncpg.Connection, operator_id: str | None) -> list[TokenRecord]:
    """One operator's tokens (their own, or any as an admin), or everyone's (an admin)."""
    rows = await conn.fetch("SELECT * FROM headend_tokens($1)", operator_id)
    return [TokenRecord(**dict(r)) for r in rows]
