"""Runs relay commands: ``sent`` is committed before any byte goes out; a ``sent`` found on restart is
resolved by reading the relay back, never by sending again blindly. One executor per command at a
time, and every state change a compare-and-set: a command is never sent twice for one attempt."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from headend.drivers.base import RelayState
from headend.store.commands import claim_execution, get_command, release_execution, transition
from headend.vocabulary import RECONNECT_OPERATION, SWITCH_OPERATION, CommandState, SwitchOperation

DRIVER_ACTION = SWITCH_OPERATION  # relay action -> the operation the driver performs
RETRY_BACKOFF = timedelta(seconds=30)
AUTOMATION_OPERATOR_CODE = "00000000"


def operator_code(operator: str) -> str:
    """The 8-digit operator code sent to the meter: numeric operator ids as they are, automation as zeros."""
    return operator if operator.isdigit() and len(operator) <= 8 else AUTOMATION_OPERATOR_CODE


class RelayDriver(Protocol):
    """What the executor needs from a meter driver (headend.drivers)."""

    async def switch(self, action: SwitchOperation, *, operator: str) -> Any: ...

    async def relay_state(self) -> Any: ...


def driver_action(command: asyncpg.Record) -> SwitchOperation:
    """What the driver is asked: off, on (direct close) or close_allowed (the customer presses the button)."""
    if command["action"] == "reconnect":
        return RECONNECT_OPERATION[command["reconnect_mode"]]
    return DRIVER_ACTION[command["action"]]


def _reached(action: SwitchOperation, state: RelayState) -> bool:
    """Read-back: status bit 4 (relay open) for off/on, bit 6 (commanded open) for close-allowed."""
    if action == "close_allowed":
        return state.command_open is False
    return bool(state.open) if action == "off" else not state.open


async def execute(
    conn: asyncpg.Connection,
    command_id: int,
    driver_for: Callable[[int], RelayDriver],
    *,
    actor: str = "executor",
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    due_only: bool = False,
) -> str:
    """Drive one command to its next state; returns the state it ends in.

    One executor at a time works on a command (an execution lock held on ``conn``; while another
    holds it, the command is left alone and its current state returned). Every state change is a
    compare-and-set from the state just read, so no command is sent twice for one attempt.
    ``due_only`` leaves a pending command whose next attempt is not due yet."""
    if not await claim_execution(conn, command_id):
        return str((await _row(conn, command_id))["state"])
    try:
        return await _drive(conn, command_id, driver_for, actor, now, due_only)
    finally:
        if not conn.is_closed():
            await release_execution(conn, command_id)


async def _row(conn: asyncpg.Connection, command_id: int) -> asyncpg.Record:
    row = await get_command(conn, command_id)
    if row is None:
        raise LookupError(f"no command {command_id}")
    return row


async def _move(conn: asyncpg.Connection, row: asyncpg.Record, state: CommandState, **changes: Any) -> str:
    """Compare-and-set from the row's state to ``state``; the state the command is in afterwards."""
    if await transition(conn, row["id"], row["state"], state, **changes):
        return state
    return str((await _row(conn, row["id"]))["state"])


async def _drive(
    conn: asyncpg.Connection,
    command_id: int,
    driver_for: Callable[[int], RelayDriver],
    actor: str,
    now: Callable[[], datetime],
    due_only: bool,
) -> str:
    row = await _row(conn, command_id)
    if row["expires_at"] <= now() and row["state"] in ("pending", "sent"):
        return await _move(conn, row, "expired", actor=actor, error="expired before confirmation")
    driver = driver_for(row["meter_id"])
    if row["state"] == "sent":
        state = await driver.relay_state()
        evidence = {"resumed": True, "state": state.to_json()}
        if _reached(driver_action(row), state):
            return await _move(conn, row, "confirmed", actor=actor, evidence=evidence)
        error = "not confirmed after restart"
        moved = await _move(conn, row, "pending", actor=actor, error=error, evidence=evidence)
        if moved != "pending":
            return moved
        row = await _row(conn, command_id)
    if row["state"] != "pending":
        return str(row["state"])
    if row["requires_approval"] and row["approved_by"] is None:
        return "pending"
    if due_only and row["next_attempt_at"] > now():
        return "pending"
    if row["dry_run"]:
        return await _move(conn, row, "cancelled", actor=actor, error="dry run: nothing sent")
    moved = await _move(conn, row, "sent", actor=actor, attempts_delta=1)
    if moved != "sent":
        return moved  # cancelled meanwhile: nothing goes out
    sent = await _row(conn, command_id)
    retry_at = now() + RETRY_BACKOFF * (row["attempts"] + 1)
    try:
        result = await driver.switch(driver_action(row), operator=operator_code(row["operator"]))
    except Exception as exc:  # a driver error must not lose the command: retry after backoff
        error = f"{type(exc).__name__}: {exc}"
        return await _move(conn, sent, "pending", actor=actor, error=error, next_attempt_at=retry_at)
    evidence = result.to_json()
    if result.status == "confirmed":
        return await _move(conn, sent, "confirmed", actor=actor, evidence=evidence)
    if result.status == "refused":
        error = f"refused: {result.reason}"
        return await _move(conn, sent, "failed", actor=actor, error=error, evidence=evidence)
    error = result.reason or result.status
    return await _move(
        conn, sent, "pending", actor=actor, error=error, evidence=evidence, next_attempt_at=retry_at
    )
