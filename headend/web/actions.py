"""The console's writes, each on a desk connection bound to the signed-in operator (so the database
refuses what the operator's roles do not allow), with the same services the CLI uses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from headend.billing import payments
from headend.billing.payments import PaymentError, PaymentOutcome, check_reference, parse_amount
from headend.control.manual import ACTIONS, ManualCommandError, cancel_command, request_command
from headend.inventory import InventoryError, find_meter
from headend.store import approvals
from headend.store.meter_requests import create_read_request, create_recollect_request
from headend.web.identity import Forbidden, Principal


class Refused(ValueError):
    """A write the service or the database refused for a reason other than the role; says why."""


async def create_command(
    conn: asyncpg.Connection, who: Principal, meter: str, action: str, reason: str
) -> tuple[int, bool]:
    """A persisted manual command (operator role); its id and whether it waits for an approver."""
    who.require("operator")
    if action not in ACTIONS:
        raise Refused(f"action must be one of {', '.join(ACTIONS)}, got {action[:40]!r}")
    if not reason.strip():
        raise Refused("a reason is required")
    try:
        command_id = await request_command(
            conn,
            meter.strip(),
            action,
            operator=who.operator_id,
            reason=reason.strip(),
            now=datetime.now(UTC),
        )
    except ManualCommandError as exc:
        raise Refused(str(exc)) from None
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None
    return command_id, await approvals.approval_of(conn, command_id) is not None


async def approve_command(conn: asyncpg.Connection, who: Principal, command_id: int) -> None:
    """Approve as the second operator (approver role, not the command's creator)."""
    who.require("approver")
    try:
        await approvals.approve(conn, [command_id], who.operator_id, "second operator (web console)")
    except approvals.BatchChanged as exc:
        raise Refused(str(exc)) from None
    except asyncpg.CheckViolationError:
        raise Forbidden(
            "the approving operator must differ from the operator who created the command"
        ) from None
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None


async def cancel(conn: asyncpg.Connection, who: Principal, command_id: int, reason: str) -> None:
    """Cancel a pending command with a reason (operator role)."""
    who.require("operator")
    if not reason.strip():
        raise Refused("a reason is required")
    try:
        await cancel_command(conn, command_id, who.operator_id, reason.strip())
    except ManualCommandError as exc:
        raise Refused(str(exc)) from None
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None


async def ask_read(conn: asyncpg.Connection, who: Principal, meter: str) -> int:
    """An on-demand read (点抄) of the meter's read plan that the daemon answers (operator role; the
    database also bounds it per operator and per channel); the request's id."""
    who.require("operator")
    return await _request(conn, meter, lambda meter_id: create_read_request(conn, meter_id, who.operator_id))


async def ask_recollect(
    conn: asyncpg.Connection, who: Principal, meter: str, since: datetime, until: datetime
) -> int:
    """A re-collection (补抄) of the meter's empty intervals in [since, until) (operator role); its id."""
    who.require("operator")
    if until <= since:
        raise Refused("the range must end after it starts")
    return await _request(
        conn, meter, lambda meter_id: create_recollect_request(conn, meter_id, who.operator_id, since, until)
    )


async def _request(conn: asyncpg.Connection, meter: str, insert: Callable[[int], Awaitable[int]]) -> int:
    try:
        meter_id, _label = await find_meter(conn, meter.strip())
    except InventoryError as exc:
        raise Refused(str(exc)) from None
    try:
        return await insert(meter_id)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None
    except asyncpg.PostgresError as exc:  # a bound of [requests], said by the database in one line
        raise Refused(str(exc).splitlines()[0]) from None


async def record_payment(
    conn: asyncpg.Connection, who: Principal, account: str, amount: str, reference: str
) -> PaymentOutcome:
    """A payment to ``account`` (cashier role), recorded once per reference as ``headend billing pay``
    does; a reference already recorded for the same account and amount changes nothing."""
    who.require("cashier")
    try:
        value = parse_amount(amount)
        check_reference(reference.strip())
        return await payments.record_payment(
            conn, account, value, reference.strip(), operator=who.operator_id, source="web"
        )
    except PaymentError as exc:
        raise Refused(str(exc)) from None
    except asyncpg.InsufficientPrivilegeError as exc:
        raise Forbidden(str(exc)) from None
