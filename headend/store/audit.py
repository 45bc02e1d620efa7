"""Queries on the append-only audit log (a trigger rejects changes)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from headend.store.results import rows


async def audit(
    conn: asyncpg.Connection,
    actor: str,
    action: str,
    entity: str,
    entity_id: Any,
    reason: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Record who (``actor``) did what (``action``) to which ``entity``, why, with ``details``."""
    await conn.execute(
        "INSERT INTO audit_log (actor, action, entity, entity_id, reason, details)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        actor,
        action,
        entity,
        str(entity_id),
        reason,
        json.dumps(details or {}, default=str),
    )


async def audit_trail(conn: asyncpg.Connection, entity: str, entity_id: object) -> list[asyncpg.Record]:
    """``at, actor, action, reason`` of every audit entry about one entity, oldest first."""
    return await rows(
        conn,
        "SELECT at, actor, action, reason FROM audit_log WHERE entity = $1 AND entity_id = $2 ORDER BY id",
        entity,
        str(entity_id),
    )


async def set_actor(conn: asyncpg.Connection, actor: str) -> None:
    """Name the actor the audit triggers record for the rest of the current transaction."""
    await conn.execute("SELECT set_config('headend.actor', $1, true)", actor)
