"""Queries on relay commands: idempotent creation, guarded state changes (audited by triggers),
look-ups for the executor, the operators' CLI and manual requests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from headend.store.audit import set_actor
from headend.vocabulary import ReconnectMode

COMMAND_LIFETIME = timedelta(hours=24)
_COLUMNS = (
    "id, meter_id, action, state::text, cause, operator, approved_by, requires_approval, dry_run, attempts"
)


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
    reconnect_mode: ReconnectMode = "close",
) -> int:
    """Insert a pending command once per ``idempotency_key``; returns the id of the (existing) row.

    ``due_at`` (default ``now``) is when the daemon may pick it up; ``reconnect_mode`` how a reconnect
    closes the relay (fixed at creation)."""
    row = await conn.fetchrow(
        """INSERT INTO commands (meter_id, action, cause, operator, idempotency_key, requires_approval,
                                 dry_run, next_attempt_at, expires_at, reconnect_mode)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
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
        reconnect_mode,
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
        await set_actor(conn, actor)
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


async def get_command(conn: asyncpg.Connection, command_id: int) -> asyncpg.Record | None:
    """The whole command row (the executor's view)."""
    return await conn.fetchrow("SELECT * FROM commands WHERE id = $1", command_id)


async def list_commands(conn: asyncpg.Connection, state: str | None = None) -> list[asyncpg.Record]:
    """Commands (optionally in one state), newest first."""
    return await conn.fetch(
        f"SELECT {_COLUMNS} FROM commands WHERE $1::text IS NULL OR state::text = $1 ORDER BY id DESC", state
    )


async def command_details(conn: asyncpg.Connection, command_id: int) -> asyncpg.Record | None:
    """One command with its evidence and last error."""
    return await conn.fetchrow(
        f"SELECT {_COLUMNS}, evidence, last_error FROM commands WHERE id = $1", command_id
    )


async def lock_state(conn: asyncpg.Connection, command_id: int) -> str | None:
    """The command's state, its row locked until the transaction ends (None: no such command)."""
    state: str | None = await conn.fetchval(
        "SELECT state::text FROM commands WHERE id = $1 FOR UPDATE", command_id
    )
    return state


async def open_command_of(conn: asyncpg.Connection, meter_id: int) -> asyncpg.Record | None:
    """``id, action`` of the meter's pending or sent command, if any."""
    return await conn.fetchrow(
        "SELECT id, action FROM commands WHERE meter_id = $1 AND state IN ('pending', 'sent')", meter_id
    )


async def relay_meter(conn: asyncpg.Connection, meter_id: int) -> asyncpg.Record | None:
    """What a relay request must know of a meter: label, relay, enabled, protection (own or account's)."""
    return await conn.fetchrow(
        """SELECT m.id, coalesce(m.name, m.address) AS label, m.has_relay, m.enabled,
                  m.protected OR coalesce(a.protected, false) AS protected,
                  coalesce(m.protected_reason, a.protected_reason) AS protected_reason
           FROM meters m LEFT JOIN accounts a ON a.id = m.account_id WHERE m.id = $1""",
        meter_id,
    )
