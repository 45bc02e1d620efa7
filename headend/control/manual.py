"""Manual relay commands: an operator asks, cancels or approves; the daemon's fee-control service
switches and reads back.

The request only creates the persisted command (cause ``manual``, the operator's id, the reason in the
audit log); nothing is sent from here. The daemon executes it at top priority on the meter's bus and
confirms it by reading the relay back, exactly like an automatic command.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from headend.inventory import InventoryError, find_meter
from headend.store import commands
from headend.store.audit import audit, set_actor
from headend.store.commands import create_command, open_command_of, relay_meter
from headend.vocabulary import ALARM_ACTIONS, RELAY_ACTIONS

ACTIONS = RELAY_ACTIONS


class ManualCommandError(ValueError):
    """A manual command that cannot be created; the message says why."""


async def _meter(conn: asyncpg.Connection, meter: str) -> asyncpg.Record:
    try:
        meter_id, _ = await find_meter(conn, meter)
    except InventoryError as exc:
        raise ManualCommandError(str(exc)) from None
    row = await relay_meter(conn, meter_id)
    if row is None:  # removed between the two look-ups
        raise ManualCommandError(f"no meter named or addressed {meter!r}")
    return row


async def request_command(
    conn: asyncpg.Connection,
    meter: str,
    action: str,
    *,
    operator: str,
    reason: str,
    now: datetime,
    cause: str = "manual",
    due_at: datetime | None = None,
) -> int:
    """Create a pending manual command for ``meter`` (name or address); returns its id.

    ``cause`` ``field`` with a late ``due_at`` is a field switch the engineer's process executes itself.

    Refused (``ManualCommandError``): unknown or ambiguous meter, no relay, disabled meter, a
    disconnect or alarm of a protected customer, an alarm on a meter that has none (only DL/T 645-2007
    meters sound one), a meter that already has an open command, no operator or no reason."""
    if action not in ACTIONS:
        raise ManualCommandError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    if not operator.strip() or not reason.strip():
        raise ManualCommandError("a manual command needs an operator id and a reason")
    row = await _meter(conn, meter)
    if not row["has_relay"]:
        raise ManualCommandError(f"meter {row['label']} has no relay")
    if not row["enabled"]:
        raise ManualCommandError(f"meter {row['label']} is disabled")
    if action in ALARM_ACTIONS and row["protocol"] != "dlt645-2007":
        raise ManualCommandError(
            f"meter {row['label']} ({row['protocol']}) has no pre-trip alarm: {action} is not supported"
        )
    if action in ("disconnect", "alarm") and row["protected"]:
        why = f" ({row['protected_reason']})" if row["protected_reason"] else ""
        raise ManualCommandError(f"meter {row['label']} is protected{why}: it is not disconnected remotely")
    open_command = await open_command_of(conn, row["id"])
    if open_command is not None:
        raise ManualCommandError(
            f"meter {row['label']} already has open command {open_command['id']} ({open_command['action']});"
            " cancel it or let it finish first"
        )
    try:
        async with conn.transaction():
            await set_actor(conn, operator)
            command_id = await create_command(
                conn,
                meter_id=row["id"],
                action=action,
                cause=cause,
                operator=operator,
                idempotency_key=f"{cause}:{uuid.uuid4()}",
                now=now,
                due_at=due_at,
            )
            await audit(
                conn,
                operator,
                "command.requested",
                "command",
                command_id,
                reason.strip(),
                {"meter": row["label"], "action": action},
            )
    except asyncpg.UniqueViolationError:  # another command for this meter was created meanwhile
        raise ManualCommandError(f"meter {row['label']} already has an open command") from None
    return command_id


async def cancel_command(conn: asyncpg.Connection, command_id: int, operator: str, reason: str) -> None:
    """Cancel a pending command, keeping who and why in its evidence; ManualCommandError if there is
    none or it is past pending (a sent command is settled by the daemon's read-back, never cancelled
    blind)."""
    async with conn.transaction():
        state = await commands.lock_state(conn, command_id)
        if state == "pending":
            await commands.transition(
                conn,
                command_id,
                "pending",
                "cancelled",
                actor=operator,
                error=f"cancelled by {operator}: {reason}",
                evidence={"cancelled": {"by": operator, "reason": reason}},
            )
    if state is None:
        raise ManualCommandError(f"no command {command_id}")
    if state == "sent":
        raise ManualCommandError(
            f"command {command_id} was sent to the meter; the daemon settles it by reading the relay back "
            "(confirmed, or retried) and it cannot be cancelled before that"
        )
    if state != "pending":
        raise ManualCommandError(f"command {command_id} is {state}, not pending")
