"""Relay commands as database rows: idempotent creation and guarded state changes (audited by triggers)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg

COMMAND_LIFETIME = timedelta(hours=24)


async def create_command(
    conn: asyncpg.Connection,
    *,
    meter_id: int,
    action: str,
    cause: str,
    operator: str,
    idempotency_key: str,
    now: datetime,
    requires_approval: bool = False,
    dry_run: bool = False,
    due_at: datetime | None = None,
) -> int:
    """Insert a pending command once per ``idempotency_key``; returns the id of the (existing) row.

    ``due_at`` (default ``now``) is when the daemon may pick it up."""
    row = await conn.fetchrow(
        """INSERT INTO commands (meter_id, action, cause, operator, idempotency_key, requires_approval,
                                 dry_run, next_attempt_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (idempotency_key) DO NOTHING RETURNING id""",
        meter_id,
        action,
        cause,
        operator,
        idempotency_key,
        requires_approval,
        dry_run,
        due_at or now,
        now + COMMAND_LIFETIME,
    )
    if row is not None:
        return int(row["id"])
    return int(await conn.fetchval("SELECT id FROM commands WHERE idempotency_key = $1", idempotency_key))


async def set_state(
    conn: asyncpg.Connection,
    command_id: int,
    state: str,
    *,
    actor: str,
    error: str | None = None,
    evidence: dict[str, Any] | None = None,
    attempts_delta: int = 0,
    next_attempt_at: datetime | None = None,
) -> None:
    """Move a command to ``state`` in its own transaction; the trigger rejects illegal transitions."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('headend.actor', $1, true)", actor)
        await conn.execute(
            """UPDATE commands SET state = $2, last_error = coalesce($3, last_error),
                      evidence = evidence || $4::jsonb, attempts = attempts + $5,
                      next_attempt_at = coalesce($6, next_attempt_at)
               WHERE id = $1""",
            command_id,
            state,
            error,
            json.dumps(evidence or {}, default=str),
            attempts_delta,
            next_attempt_at,
        )
