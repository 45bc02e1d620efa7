"""``headend commands``: create, list, show, cancel and approve relay commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import typer

from headend.commands.common import DsnOption, fail, run_with_conn
from headend.control.automation import resume
from headend.control.manual import ManualCommandError, approve_command, cancel_command, request_command
from headend.store import commands as command_store
from headend.store.audit import audit_trail

commands_app = typer.Typer(
    help="Relay commands: create, list, show, cancel, approve; resume after a cap halt.",
    no_args_is_help=True,
)
OperatorOption = typer.Option(..., "--operator", help="Operator id recorded in the audit log.")


@commands_app.command("create")
def create(
    meter: str = typer.Argument(..., help="Meter name or address."),
    action: str = typer.Argument(..., help="disconnect or reconnect."),
    operator: str = OperatorOption,
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audit log)."),
    dsn: str | None = DsnOption,
) -> None:
    """Ask the daemon to switch one meter: a persisted command it executes and confirms by read-back."""

    async def work(conn: asyncpg.Connection) -> int:
        return await request_command(
            conn, meter, action, operator=operator, reason=reason, now=datetime.now(UTC)
        )

    try:
        command_id = run_with_conn(dsn, work)
    except ManualCommandError as exc:
        fail(str(exc))
    typer.echo(
        f"command {command_id} created ({action} {meter}); the daemon executes it and confirms it by "
        f"read-back: headend commands show {command_id}"
    )


@commands_app.command("resume")
def resume_automation(
    operator: str = OperatorOption,
    reason: str = typer.Option(..., "--reason", help="Why it is safe to resume (audited)."),
    dsn: str | None = DsnOption,
) -> None:
    """Lift a cap halt of automatic disconnection (after checking why so many were due)."""
    rule = run_with_conn(dsn, lambda c: resume(c, operator, reason))
    if rule is None:
        fail("automatic disconnection is not halted")
    typer.echo(f"automatic disconnection resumed (was halted by {rule})")


@commands_app.command("list")
def list_commands(
    state: str | None = typer.Option(None, help="Only this state."), dsn: str | None = DsnOption
) -> None:
    """Commands, newest first, as JSON lines."""
    for row in run_with_conn(dsn, lambda c: command_store.list_commands(c, state)):
        typer.echo(json.dumps(dict(row), default=str))


@commands_app.command("show")
def show(command_id: int, dsn: str | None = DsnOption) -> None:
    """One command with its evidence and audit trail."""

    async def work(conn: asyncpg.Connection) -> tuple[Any, list[asyncpg.Record]]:
        row = await command_store.command_details(conn, command_id)
        return row, await audit_trail(conn, "command", command_id)

    row, trail = run_with_conn(dsn, work)
    if row is None:
        fail(f"no command {command_id}")
    typer.echo(json.dumps({**dict(row), "audit": [dict(t) for t in trail]}, default=str, indent=2))


@commands_app.command("cancel")
def cancel(command_id: int, operator: str = OperatorOption, dsn: str | None = DsnOption) -> None:
    """Cancel a pending command (a sent one is settled by the daemon's read-back, never cancelled blind)."""
    try:
        run_with_conn(dsn, lambda c: cancel_command(c, command_id, operator))
    except (ManualCommandError, asyncpg.PostgresError) as exc:
        fail(str(exc))
    typer.echo(f"command {command_id} cancelled")


@commands_app.command("approve")
def approve(command_id: int, operator: str = OperatorOption, dsn: str | None = DsnOption) -> None:
    """Approve a bulk command as the second operator (must differ from the one who created it)."""
    try:
        run_with_conn(dsn, lambda c: approve_command(c, command_id, operator))
    except ManualCommandError as exc:
        fail(str(exc))
    typer.echo(f"command {command_id} approved by {operator}")


def register(app: typer.Typer) -> None:
    """Attach ``headend commands``."""
    app.add_typer(commands_app, name="commands")
