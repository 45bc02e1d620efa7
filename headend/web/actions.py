"""The console's writes, each on a desk connection bound to the signed-in operator (so the database
refuses what the operator's roles do not allow), with the same services the CLI uses."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from headend.control.manual import ACTIONS, ManualCommandError, cancel_command, request_command
from headend.store import approvals
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
