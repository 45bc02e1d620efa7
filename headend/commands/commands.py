"""``headend commands``: create, list, show, cancel and approve relay commands."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import typer

from headend import limits
from headend.audit import audit
from headend.control.automation import resume
from headend.control.manual import ManualCommandError, request_command
from headend.control.store import set_state
from headend.store.dsn import resolve_dsn

commands_app = typer.Typer(
    help="Relay commands: create, list, show, cancel, approve; resume after a cap halt.",
    no_args_is_help=True,
)
DsnOption = typer.Option(None, "--dsn", help="PostgreSQL DSN (default: $HEADEND_DSN, else embedded server).")
OperatorOption = typer.Option(..., "--operator", help="Operator id recorded in the audit log.")
STATES = ("pending", "sent", "confirmed", "failed", "cancelled", "expired")  # enum command_state (0004)
_COLUMNS = (
    "id, meter_id, action, state::text, cause, operator, approved_by, requires_approval, dry_run, attempts"
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _command_id(value: int) -> int:
    """A command id the database can hold, else one error line."""
    try:
        return limits.db_id(value, "command id")
    except ValueError as exc:
        _fail(str(exc))
        raise


async def _with_conn(dsn: str | None, work: Any) -> Any:
    conn = await asyncpg.connect(resolve_dsn(dsn))
    try:
        return await work(conn)
    finally:
        await conn.close()


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
        command_id = asyncio.run(_with_conn(dsn, work))
    except ManualCommandError as exc:
        _fail(str(exc))
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
    rule = asyncio.run(_with_conn(dsn, lambda c: resume(c, operator, reason)))
    if rule is None:
        _fail("automatic disconnection is not halted")
    typer.echo(f"automatic disconnection resumed (was halted by {rule})")


@commands_app.command("list")
def list_commands(
    state: str | None = typer.Option(None, help="Only this state."), dsn: str | None = DsnOption
) -> None:
    """Commands, newest first, as JSON lines."""
    if state is not None and state not in STATES:
        _fail(f"--state must be one of {', '.join(STATES)}, got {state[:40]!r}")
    rows = asyncio.run(
        _with_conn(
            dsn,
            lambda c: c.fetch(
                f"SELECT {_COLUMNS} FROM commands"
                " WHERE $1::text IS NULL OR state::text = $1 ORDER BY id DESC",
                state,
            ),
        )
    )
    for row in rows:
        typer.echo(json.dumps(dict(row), default=str))


@commands_app.command("show")
def show(command_id: int, dsn: str | None = DsnOption) -> None:
    """One command with its evidence and audit trail."""
    _command_id(command_id)

    async def work(conn: asyncpg.Connection) -> tuple[Any, Any]:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS}, evidence, last_error FROM commands WHERE id = $1", command_id
        )
        trail = await conn.fetch(
            "SELECT at, actor, action, reason FROM audit_log "
            "WHERE entity = 'command' AND entity_id = $1 ORDER BY id",
            str(command_id),
        )
        return row, trail

    row, trail = asyncio.run(_with_conn(dsn, work))
    if row is None:
        _fail(f"no command {command_id}")
    typer.echo(json.dumps({**dict(row), "audit": [dict(t) for t in trail]}, default=str, indent=2))


@commands_app.command("cancel")
def cancel(command_id: int, operator: str = OperatorOption, dsn: str | None = DsnOption) -> None:
    """Cancel a pending command (a sent one is settled by the daemon's read-back, never cancelled blind)."""
    _command_id(command_id)

    async def work(conn: asyncpg.Connection) -> str | None:
        async with conn.transaction():
            state = await conn.fetchval(
                "SELECT state::text FROM commands WHERE id = $1 FOR UPDATE", command_id
            )
            if state == "pending":
                await set_state(
                    conn, command_id, "cancelled", actor=operator, error=f"cancelled by {operator}"
                )
        return state

    try:
        state = asyncio.run(_with_conn(dsn, work))
    except asyncpg.PostgresError as exc:
        _fail(str(exc))
    if state is None:
        _fail(f"no command {command_id}")
    if state == "sent":
        _fail(
            f"command {command_id} was sent to the meter; the daemon settles it by reading the relay back "
            "(confirmed, or retried) and it cannot be cancelled before that"
        )
    if state != "pending":
        _fail(f"command {command_id} is {state}, not pending")
    typer.echo(f"command {command_id} cancelled")


@commands_app.command("approve")
def approve(command_id: int, operator: str = OperatorOption, dsn: str | None = DsnOption) -> None:
    """Approve a bulk command as the second operator (must differ from the one who created it)."""
    _command_id(command_id)

    async def work(conn: asyncpg.Connection) -> str:
        async with conn.transaction():
            await conn.execute("SELECT set_config('headend.actor', $1, true)", operator)
            done = await conn.execute(
                "UPDATE commands SET approved_by = $2 WHERE id = $1 AND requires_approval "
                "AND approved_by IS NULL AND state = 'pending'",
                command_id,
                operator,
            )
            if done == "UPDATE 1":
                await audit(conn, operator, "command.approved", "command", command_id, "second operator")
        return done

    try:
        done = asyncio.run(_with_conn(dsn, work))
    except asyncpg.CheckViolationError:
        _fail("the approving operator must differ from the operator who created the command")
    if done != "UPDATE 1":
        _fail(f"command {command_id} is not a pending command awaiting approval")
    typer.echo(f"command {command_id} approved by {operator}")


def register(app: typer.Typer) -> None:
    """Attach ``headend commands``."""
    app.add_typer(commands_app, name="commands")
