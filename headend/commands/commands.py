"""``headend commands``: create, list, show, cancel and approve relay commands."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import typer

from headend import limits
from headend.commands.app import CommandGroup
from headend.commands.auth import OperatorId, login
from headend.commands.common import Dsn, fail, run_with_conn
from headend.control.automation import resume
from headend.control.manual import ManualCommandError, cancel_command, request_command
from headend.operators import OperatorError
from headend.store import approvals
from headend.store import commands as command_store
from headend.store.audit import audit_trail
from headend.vocabulary import COMMAND_STATES

commands_app = CommandGroup(
    help="Relay commands: create, list, show, cancel, approve; resume after a cap halt.",
    no_args_is_help=True,
)


def _command_id(value: int) -> int:
    """A command id the database can hold, else one error line."""
    try:
        return limits.db_id(value, "command id")
    except ValueError as exc:
        fail(str(exc))


@commands_app.command("create")
def create(
    meter: Annotated[str, typer.Argument(help="Meter name or address.")],
    action: Annotated[
        str,
        typer.Argument(
            help="disconnect, reconnect, alarm (the meter's pre-trip alarm, 0x1C 2A) or alarm_release (2B)."
        ),
    ],
    operator: OperatorId,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")],
    dsn: Dsn = None,
) -> None:
    """Ask the daemon to switch one meter (or sound / silence its pre-trip alarm): a persisted command it
    executes and confirms by read-back."""
    me = login(operator)

    async def work(conn: asyncpg.Connection) -> tuple[int, list[str] | None]:
        await me.sign_in(conn, "operator")
        command_id = await request_command(
            conn, meter, action, operator=me.operator_id, reason=reason, now=datetime.now(UTC)
        )
        return command_id, await approvals.approval_of(conn, command_id)

    try:
        command_id, approvers = run_with_conn(dsn, work)
    except (ManualCommandError, OperatorError) as exc:
        fail(str(exc))
    if approvers is not None:
        who = ", ".join(approvers) if approvers else "nobody yet: add an operator with the approver role"
        typer.echo(
            f"command {command_id} created ({action} {meter}); it waits for approval by another operator "
            f"holding the approver role (may approve: {who}): headend commands approve {command_id} "
            "--operator ID; then the daemon executes it and confirms it by read-back"
        )
        return
    typer.echo(
        f"command {command_id} created ({action} {meter}); the daemon executes it and confirms it by "
        f"read-back: headend commands show {command_id}"
    )


@commands_app.command("resume")
def resume_automation(
    operator: OperatorId,
    reason: Annotated[str, typer.Option("--reason", help="Why it is safe to resume (audited).")],
    dsn: Dsn = None,
) -> None:
    """Lift a cap halt of automatic disconnection (after checking why so many were due); admin only."""
    me = login(operator)

    async def work(conn: asyncpg.Connection) -> str | None:
        await me.sign_in(conn, "admin")
        return await resume(conn, me.operator_id, reason)

    try:
        rule = run_with_conn(dsn, work)
    except OperatorError as exc:
        fail(str(exc))
    if rule is None:
        fail("automatic disconnection is not halted")
    typer.echo(f"automatic disconnection resumed (was halted by {rule})")


@commands_app.command("list")
def list_commands(
    state: Annotated[str | None, typer.Option(help="Only this state.")] = None, dsn: Dsn = None
) -> None:
    """Commands, newest first, as JSON lines."""
    if state is not None and state not in COMMAND_STATES:
        fail(f"--state must be one of {', '.join(COMMAND_STATES)}, got {state[:40]!r}")
    for row in run_with_conn(dsn, lambda c: command_store.list_commands(c, state)):
        typer.echo(json.dumps(dict(row), default=str))


@commands_app.command("show")
def show(command_id: int, dsn: Dsn = None) -> None:
    """One command with its evidence and audit trail."""
    _command_id(command_id)

    async def work(conn: asyncpg.Connection) -> tuple[Any, list[asyncpg.Record]]:
        row = await command_store.command_details(conn, command_id)
        return row, await audit_trail(conn, "command", command_id)

    row, trail = run_with_conn(dsn, work)
    if row is None:
        fail(f"no command {command_id}")
    command = {
        **dict(row),
        "evidence": json.loads(row["evidence"]) if isinstance(row["evidence"], str) else row["evidence"],
    }
    typer.echo(json.dumps({**command, "audit": [dict(t) for t in trail]}, default=str, indent=2))


@commands_app.command("cancel")
def cancel(
    command_id: int,
    operator: OperatorId,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the command and audited).")],
    dsn: Dsn = None,
) -> None:
    """Cancel a pending command (a sent one is settled by the daemon's read-back, never cancelled blind)."""
    _command_id(command_id)
    if not reason.strip():
        fail("--reason must say why the command is cancelled")
    me = login(operator)

    async def work(conn: asyncpg.Connection) -> None:
        await me.sign_in(conn, "operator")
        await cancel_command(conn, command_id, me.operator_id, reason.strip())

    try:
        run_with_conn(dsn, work)
    except (ManualCommandError, OperatorError, asyncpg.PostgresError) as exc:
        fail(str(exc))
    typer.echo(f"command {command_id} cancelled")


def _batch_token(rows: list[asyncpg.Record]) -> str:
    """A short digest naming exactly these commands (id, meter, action): what a reviewer approves."""
    text = ";".join(f"{r['id']}:{r['meter_id']}:{r['action']}" for r in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@commands_app.command("review")
def review(dsn: Dsn = None) -> None:
    """Commands awaiting a second operator, as JSON lines, then the batch token to approve them all."""
    rows = run_with_conn(dsn, approvals.awaiting_approval)
    for row in rows:
        typer.echo(json.dumps(dict(row), default=str, ensure_ascii=False))
    if not rows:
        typer.echo("no command awaits approval")
        return
    token = _batch_token(rows)
    typer.echo(f"batch {token}: headend commands approve --batch {token} --operator ID")


@commands_app.command("approve")
def approve(
    operator: OperatorId,
    command_ids: Annotated[
        list[int] | None, typer.Argument(metavar="[ID]...", help="Commands to approve.")
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(
            "--batch", help="Approve the whole batch shown by `headend commands review` (its token)."
        ),
    ] = None,
    dsn: Dsn = None,
) -> None:
    """Approve commands as the second operator: an approver who did not create them."""
    if bool(command_ids) == (batch is not None):
        fail("give command ids or --batch TOKEN (from `headend commands review`), not both")
    for command_id in command_ids or []:
        _command_id(command_id)
    me = login(operator)

    async def work(conn: asyncpg.Connection) -> list[int]:
        await me.sign_in(conn, "approver")
        if batch is None:
            chosen = sorted(set(command_ids or []))
            return await approvals.approve(conn, chosen, me.operator_id, "second operator")
        rows = await approvals.awaiting_approval(conn)
        if not rows or _batch_token(rows) != batch.strip():
            raise approvals.BatchChanged(
                f"batch {batch} is not the batch awaiting approval now: run `headend commands review` again"
            )
        ids = [int(r["id"]) for r in rows]
        return await approvals.approve(conn, ids, me.operator_id, f"batch {batch.strip()} reviewed")

    try:
        done = run_with_conn(dsn, work)
    except (OperatorError, approvals.BatchChanged) as exc:
        fail(str(exc))
    except asyncpg.CheckViolationError:
        fail("the approving operator must differ from the operator who created the command")
    except asyncpg.InsufficientPrivilegeError as exc:
        fail(str(exc))
    typer.echo(f"approved by {me.operator_id}: commands {', '.join(map(str, done))}")


def register(app: typer.Typer) -> None:
    """Attach ``headend commands``."""
    app.add_typer(commands_app, name="commands")
