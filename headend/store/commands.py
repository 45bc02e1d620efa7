"""Queries on relay commands: idempotent creation, compare-and-set state changes (audited by triggers),
per-command execution locks, look-ups for the executor, the operators' CLI and manual requests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from headend.store.audit import set_actor
from headend.store.results import row, rows
from headend.vocabulary import CommandState, ReconnectMode

COMMAND_LIFETIME = timedelta(hours=24)
_EXECUTION_LOCK = 0x68650C01  # advisory lock class of "one executor per command"
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


async def transition(
    conn: asyncpg.Connection,
    command_id: int,
    expected: CommandState,
    state: CommandState,
    *,
    actor: str,
    error: str | None = None,
    evidence: dict[str, Any] | None = None,
    attempts_delta: int = 0,
    next_attempt_at: datetime | None = None,
    confirmed_at: datetime | None = None,
) -> bool:
    """Compare-and-set: move the command from ``expected`` to ``state`` in its own transaction.

    Returns False (nothing changed) when the command is no longer in ``expected``: another executor
    or an operator moved it first. The trigger still rejects illegal transitions. ``confirmed_at`` is
    the executor's time of a confirmation (the clock the notice period is judged on)."""
    async with conn.transaction():
        await set_actor(conn, actor)
        moved = await conn.fetchval(
            """UPDATE commands SET state = $3, last_error = coalesce($4, last_error),
                      evidence = evidence || $5::jsonb, attempts = attempts + $6,
                      next_attempt_at = coalesce($7, next_attempt_at),
                      confirmed_at = coalesce($8, confirmed_at)
               WHERE id = $1 AND state = $2::command_state RETURNING id""",
            command_id,
            expected,
            state,
            error,
            json.dumps(evidence or {}, default=str),
            attempts_delta,
            next_attempt_at,
            confirmed_at,
        )
    return moved is not None


async def claim_execution(conn: asyncpg.Connection, command_id: int) -> bool:
    """Take the command's execution lock on this connection (False: another executor holds it).

    A session advisory lock: it is released by :func:`release_execution` or when the holder's
    connection ends (a crashed executor never blocks the command for good)."""
    claimed: bool = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", _EXECUTION_LOCK, command_id)
    return claimed


async def release_execution(conn: asyncpg.Connection, command_id: int) -> None:
    """Give back the execution lock taken by :func:`claim_execution`."""
    await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", _EXECUTION_LOCK, command_id)


async def get_command(conn: asyncpg.Connection, command_id: int) -> asyncpg.Record | None:
    """The whole command row (the executor's view)."""
    return await row(conn, "SELECT * FROM commands WHERE id = $1", command_id)


async def list_commands(conn: asyncpg.Connection, state: str | None = None) -> list[asyncpg.Record]:
    """Commands (optionally in one state), newest first."""
    return await rows(
        conn,
        f"SELECT {_COLUMNS} FROM commands WHERE $1::text IS NULL OR state::text = $1 ORDER BY id DESC",
        state,
    )


async def command_details(conn: asyncpg.Connection, command_id: int) -> asyncpg.Record | None:
    """One command with its evidence and last error."""
    return await row(conn, f"SELECT {_COLUMNS}, evidence, last_error FROM commands WHERE id = $1", command_id)


async def lock_state(conn: asyncpg.Connection, command_id: int) -> str | None:
    """The command's state, its row locked until the transaction ends (None: no such command)."""
    state: str | None = await conn.fetchval(
        "SELECT state::text FROM commands WHERE id = $1 FOR UPDATE", command_id
    )
    return state


async def open_command_of(conn: asyncpg.Connection, meter_id: int) -> asyncpg.Record | None:
    """``id, action`` of the meter's pending or sent command, if any."""
    return await row(
        conn, "SELECT id, action FROM commands WHERE meter_id = $1 AND state IN ('pending', 'sent')", meter_id
    )


async def relay_meter(conn: asyncpg.Connection, meter_id: int) -> asyncpg.Record | None:
    """What a relay request must know of a meter: label, relay, enabled, protocol, protection (own or
    account's)."""
    return await row(
        conn,
        """SELECT m.id, coalesce(m.name, m.address) AS label, m.has_relay, m.enabled, m.protocol,
                  m.protected OR coalesce(a.protected, false) AS protected,
                  coalesce(m.protected_reason, a.protected_reason) AS protected_reason
           FROM meters m LEFT JOIN meter_assignments x ON x.meter_id = m.id AND x.effective_to IS NULL
           LEFT JOIN accounts a ON a.id = x.account_id WHERE m.id = $1""",
        meter_id,
    )
