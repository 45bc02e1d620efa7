"""``headend db``: migrate and inspect the database; start/stop the embedded server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import typer
from rich.table import Table

from headend import limits
from headend.commands.app import CommandGroup
from headend.commands.auth import OperatorId, login
from headend.commands.common import Dsn, fail, run_with_conn, target_dsn
from headend.commands.views import console as make_console
from headend.operators import OperatorError
from headend.store import maintenance
from headend.store.audit import audit
from headend.store.dsn import redact
from headend.store.embedded import EmbeddedPostgres, EmbeddedPostgresError
from headend.store.migrate import MigrationError, migrate, status

console = make_console()
db_app = CommandGroup(help="Database: migrations, status, the embedded server.", no_args_is_help=True)


@db_app.command("migrate")
def migrate_command(
    dsn: Dsn = None,
    mode: Annotated[str | None, typer.Option(help="Force 'native' or 'timescale' (default: detect).")] = None,
) -> None:
    """Apply pending migrations."""
    target = target_dsn(dsn)
    try:
        applied = asyncio.run(migrate(target, mode=mode))
    except MigrationError as exc:
        fail(str(exc))
    if applied:
        for label in applied:
            console.print(f"applied {label}")
    else:
        console.print("up to date")


@db_app.command("status")
def status_command(dsn: Dsn = None) -> None:
    """Show the storage mode and applied/pending migrations; exit 1 on edited or missing files."""
    target = target_dsn(dsn)
    try:
        report = asyncio.run(status(target))
    except MigrationError as exc:
        fail(str(exc))
    console.print(f"database: {redact(target)}")
    console.print(f"storage mode: [bold]{report.mode or 'not migrated'}[/bold] — {report.mode_reason}")
    if report.timescaledb_version:
        console.print(f"timescaledb: {report.timescaledb_version}")
    table = Table("migration", "variant", "applied at", "checksum")
    for m in report.applied:
        applied_at = m.applied_at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(f"{m.version:04d}_{m.name}", m.variant or "shared", applied_at, m.checksum[:12])
    for label in report.pending:
        table.add_row(label, "", "[yellow]pending[/yellow]", "")
    console.print(table)
    for problem in report.problems:
        console.print(f"[red]problem:[/red] {problem}")
    if report.problems:
        raise typer.Exit(1)


@db_app.command("policy")
def policy_command(
    operator: OperatorId,
    dsn: Dsn = None,
    retention_days: Annotated[
        int | None, typer.Option(help="Keep raw readings this many days (0: forever).")
    ] = None,
    compress_after_days: Annotated[
        int | None, typer.Option(help="TimescaleDB: compress chunks older than this.")
    ] = None,
) -> None:
    """Set the raw-reading retention and (TimescaleDB) the compression age (role admin; audited)."""
    for option, value in (
        ("--retention-days", retention_days),
        ("--compress-after-days", compress_after_days),
    ):
        if value is not None:
            try:
                limits.days(value, option)
            except ValueError as exc:
                fail(str(exc))
    target = target_dsn(dsn)
    admin = login(operator)  # after the input checks: a typo is said before the password is asked

    async def apply(conn: asyncpg.Connection) -> None:
        signed_in = await admin.sign_in(conn, "admin")
        if retention_days is not None:
            keep = timedelta(days=retention_days) if retention_days > 0 else None
            await maintenance.set_retention(conn, keep)
            console.print(f"retention: {f'{retention_days} days' if keep else 'forever'}")
        if compress_after_days is not None:
            await maintenance.set_compression_after(conn, timedelta(days=compress_after_days))
            console.print(f"compression after {compress_after_days} days")
        details = {"retention_days": retention_days, "compress_after_days": compress_after_days}
        await audit(conn, signed_in.id, "db.policy_set", "readings", "policy", "db policy", details)

    try:
        run_with_conn(target, apply)
    except (RuntimeError, OperatorError, asyncpg.InsufficientPrivilegeError) as exc:
        fail(str(exc))


@db_app.command("maintain")
def maintain_command(dsn: Dsn = None) -> None:
    """Native-mode upkeep now: partitions ahead, daily aggregate, retention (the daemon does it too)."""
    run_with_conn(dsn, lambda c: maintenance.run_maintenance(c, datetime.now(UTC)))
    console.print("done")


@db_app.command("start")
def start_command() -> None:
    """Start the embedded PostgreSQL server (no-op if it runs) and print its DSN."""
    try:
        console.print(EmbeddedPostgres().start())
    except EmbeddedPostgresError as exc:
        fail(str(exc))


@db_app.command("stop")
def stop_command() -> None:
    """Stop the embedded PostgreSQL server."""
    try:
        EmbeddedPostgres().stop()
    except EmbeddedPostgresError as exc:
        fail(str(exc))
    console.print("stopped")


def register(app: typer.Typer) -> None:
    """Attach ``headend db`` to the application."""
    app.add_typer(db_app, name="db")
