"""Runs relay commands: ``sent`` is committed before any byte goes out, in the same transaction that
checks every gate (:mod:`headend.control.send_gates`) with the rows they depend on locked. A ``sent``
command whose outcome is unknown (a restart, a lost reply, a redial, a read-back that failed) is
resolved by reading the relay back first, never by sending again blindly. One executor per command
at a time, and every state change a compare-and-set: a command is never sent twice for one attempt."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from headend.control.safety import SafetySettings
from headend.control.send_gates import check_send
from headend.drivers.base import RelayState
from headend.services import LeaseOf, no_cluster
from headend.store.cluster import set_fence
from headend.store.commands import claim_execution, get_command, release_execution, transition
from headend.store.send_gates import lock_send_facts, note_waiting
from headend.vocabulary import RECONNECT_OPERATION, SWITCH_OPERATION, CommandState, SwitchOperation

DRIVER_ACTION = SWITCH_OPERATION  # relay action -> the operation the driver performs
RETRY_BACKOFF = timedelta(seconds=30)
AUTOMATION_OPERATOR_CODE = "00000000"
DEFAULT_SETTINGS = SafetySettings()


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
    """Read-back: status bit 4 (relay open) for off/on, bit 6 (commanded open) for close-allowed, bit 7
    (pre-trip alarm) for the alarm and its release."""
    if action in ("alarm", "alarm_release"):
        return state.pre_trip_alarm is (action == "alarm")
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
    settings: SafetySettings = DEFAULT_SETTINGS,
    lease_of: LeaseOf = no_cluster,
) -> str:
    """Drive one command to its next state; returns the state it ends in.

    One executor at a time works on a command (an execution lock held on ``conn``; while another
    holds it, the command is left alone and its current state returned). Every state change is a
    compare-and-set from the state just read, so no command is sent twice for one attempt.
    ``due_only`` leaves a pending command whose next attempt is not due yet; ``settings`` are the
    ``[safety]`` rules the gates apply when the frame is about to go out. ``lease_of`` names the
    channel lease this daemon sends under (a command on another daemon's channel is left to it)."""
    if not await claim_execution(conn, command_id):
        return str((await _row(conn, command_id))["state"])
    try:
        return await _drive(conn, command_id, driver_for, actor, now, due_only, settings, lease_of)
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
    settings: SafetySettings,
    lease_of: LeaseOf,
) -> str:
    row = await _row(conn, command_id)
    lease = lease_of(row["meter_id"])
    if lease is None:
        return str(row["state"])  # another daemon's channel: its owner executes the command
    if row["expires_at"] <= now() and row["state"] in ("pending", "sent"):
        return await _move(conn, row, "expired", actor=actor, error="expired before confirmation")
    if due_only and row["next_attempt_at"] > now():
        return str(row["state"])
    driver = driver_for(row["meter_id"])
    if row["state"] == "sent":
        state = await driver.relay_state()
        evidence = {"resumed": True, "state": state.to_json()}
        if _reached(driver_action(row), state):
            return await _move(conn, row, "confirmed", actor=actor, evidence=evidence, confirmed_at=now())
        error = "not confirmed at read-back"
        moved = await _move(conn, row, "pending", actor=actor, error=error, evidence=evidence)
        if moved != "pending":
            return moved
        row = await _row(conn, command_id)
    if row["state"] != "pending":
        return str(row["state"])
    if row["requires_approval"] and row["approved_by"] is None:
        return "pending"
    if row["dry_run"]:
        return await _move(conn, row, "cancelled", actor=actor, error="dry run: nothing sent")
    moved = await _gate_and_send(conn, row, actor, now(), settings, lease)
    if moved != "sent":
        return moved  # waiting, refused or cancelled meanwhile: nothing goes out
    sent = await _row(conn, command_id)
    return await _switch(conn, sent, driver, actor, now, RETRY_BACKOFF * sent["attempts"])


async def _gate_and_send(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    actor: str,
    at: datetime,
    settings: SafetySettings,
    lease: tuple[str, int],
) -> str:
    """Check every gate and move the command to ``sent`` in one transaction (see the module doc); in a
    cluster the transaction names the channel lease it acts under (the database checks it is current)."""
    async with conn.transaction():
        if lease[0]:
            await set_fence(conn, *lease)
        facts = await lock_send_facts(conn, row["id"], at)
        if facts is None or facts.state != "pending":
            return await _current(conn, row["id"])
        outcome = check_send(facts, settings, at)
        if outcome.verdict == "wait":
            await note_waiting(conn, row["id"], actor, outcome.rule, outcome.reason)
            return "pending"
        if outcome.verdict == "refuse":
            error = f"refused at send: {outcome.rule}: {outcome.reason}"
            gate = {"gate": outcome.rule}
            return await _move(conn, row, "cancelled", actor=actor, error=error, evidence=gate)
        return await _move(conn, row, "sent", actor=actor, attempts_delta=1)


async def _current(conn: asyncpg.Connection, command_id: int) -> str:
    return str((await _row(conn, command_id))["state"])


async def _switch(
    conn: asyncpg.Connection,
    sent: asyncpg.Record,
    driver: RelayDriver,
    actor: str,
    now: Callable[[], datetime],
    backoff: timedelta,
) -> str:
    """Send the frame once and settle the command by what the relay read back says.

    Without a read-back (the driver failed, the reply and every read-back were lost) the command stays
    ``sent`` for ``backoff``: its next attempt reads the relay back before anything is sent again."""
    retry_at = now() + backoff
    try:
        result = await driver.switch(driver_action(sent), operator=operator_code(sent["operator"]))
    except Exception as exc:  # a driver error must not lose the command: read back at the next attempt
        error = f"{type(exc).__name__}: {exc}"
        return await _move(conn, sent, "sent", actor=actor, error=error, next_attempt_at=retry_at)
    evidence = result.to_json()
    if result.status == "confirmed":
        return await _move(conn, sent, "confirmed", actor=actor, evidence=evidence, confirmed_at=now())
    if result.status == "refused":
        error = f"refused: {result.reason}"
        return await _move(conn, sent, "failed", actor=actor, error=error, evidence=evidence)
    error = result.reason or result.status
    # read back and not reached: a fresh attempt after the backoff; not read back: stays sent
    state: CommandState = "pending" if result.state is not None else "sent"
    return await _move(
        conn, sent, state, actor=actor, error=error, evidence=evidence, next_attempt_at=retry_at
    )
