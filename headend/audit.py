"""The append-only audit log (a trigger rejects changes): every module writes it through ``audit``."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


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
