"""Runs relay commands: ``sent`` is committed before any byte goes out; a ``sent`` found on restart is
resolved by reading the relay back, never by sending again blindly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from headend.drivers.base import RelayState
from headend.store.commands import get_command, set_state
from headend.vocabulary import RECONNECT_OPERATION, SWITCH_OPERATION, SwitchOperation

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
) -> str:
    """Drive one command to its next state; returns the state it ends in."""
    row = await get_command(conn, command_id)
    if row is None:
        raise LookupError(f"no command {command_id}")
    if row["expires_at"] <= now() and row["state"] in ("pending", "sent"):
        await set_state(conn, command_id, "expired", actor=actor, error="expired before confirmation")
        return "expired"
    driver = driver_for(row["meter_id"])
    if row["state"] == "sent":
        state = await driver.relay_state()
        if _reached(driver_action(row), state):
            await set_state(
                conn,
                command_id,
                "confirmed",
                actor=actor,
                evidence={"resumed": True, "state": state.to_json()},
            )
            return "confirmed"
        await set_state(
            conn,
            command_id,
            "pending",
            actor=actor,
            error="not confirmed after restart",
            evidence={"resumed": True, "state": state.to_json()},
        )
        row = await get_command(conn, command_id)
        if row is None:
            raise LookupError(f"no command {command_id}")
    if row["state"] != "pending":
        return str(row["state"])
    if row["requires_approval"] and row["approved_by"] is None:
        return "pending"
    if row["dry_run"]:
        await set_state(conn, command_id, "cancelled", actor=actor, error="dry run: nothing sent")
        return "cancelled"
    await set_state(conn, command_id, "sent", actor=actor, attempts_delta=1)
    try:
        result = await driver.switch(driver_action(row), operator=operator_code(row["operator"]))
    except Exception as exc:  # a driver error must not lose the command: retry after backoff
        await set_state(
            conn,
            command_id,
            "pending",
            actor=actor,
            error=f"{type(exc).__name__}: {exc}",
            next_attempt_at=now() + RETRY_BACKOFF * (row["attempts"] + 1),
        )
        return "pending"
    evidence = result.to_json()
    if result.status == "confirmed":
        await set_state(conn, command_id, "confirmed", actor=actor, evidence=evidence)
        return "confirmed"
    if result.status == "refused":
        await set_state(
            conn, command_id, "failed", actor=actor, error=f"refused: {result.reason}", evidence=evidence
        )
        return "failed"
    await set_state(
        conn,
        command_id,
        "pending",
        actor=actor,
        error=result.reason or result.status,
        evidence=evidence,
        next_attempt_at=now() + RETRY_BACKOFF * (row["attempts"] + 1),
    )
    return "pending"
