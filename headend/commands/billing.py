"""``headend billing``: payments (one-off and CSV file), account status, billing runs, meter replacement."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import typer

from headend import limits
from headend.billing.charging import BillingError, bill_account
from headend.billing.payments import PaymentError, import_csv, parse_amount, record_payment
from headend.billing.tariff import TariffError
from headend.store.dsn import resolve_dsn

billing_app = typer.Typer(
    help="Billing: payments, account status, billing runs, meter replacement.", no_args_is_help=True
)
DsnOption = typer.Option(None, "--dsn", help="PostgreSQL DSN (default: $HEADEND_DSN, else embedded server).")
OperatorOption = typer.Option(..., "--operator", help="Operator id recorded in the audit log.")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@billing_app.command("pay")
def pay(
    account: str,
    amount: str,
    ref: str = typer.Option(..., "--ref", help="Payment reference (idempotent)."),
    operator: str = OperatorOption,
    dsn: str | None = DsnOption,
) -> None:
    """Record a payment once per reference."""

    async def run() -> None:
        conn = await asyncpg.connect(resolve_dsn(dsn))
        try:
            outcome = await record_payment(conn, account, parse_amount(amount), ref, operator=operator)
        finally:
            await conn.close()
        word = "recorded" if outcome.recorded else "already recorded"
        typer.echo(f"{account}: payment {ref} {word}; balance {outcome.balance}")

    try:
        asyncio.run(run())
    except PaymentError as exc:
        _fail(str(exc))


@billing_app.command("import")
def import_file(path: Path, operator: str = OperatorOption, dsn: str | None = DsnOption) -> None:
    """Import a CSV payment file (account,amount,reference); nothing is stored if any row is bad."""

    async def run() -> None:
        conn = await asyncpg.connect(resolve_dsn(dsn))
        try:
            done = await import_csv(
                conn, path.read_text(encoding="utf-8"), operator=operator, source=f"import:{path.name}"
            )
        finally:
            await conn.close()
        recorded = sum(o.recorded for o in done)
        typer.echo(f"{recorded} recorded, {len(done) - recorded} duplicates")

    try:
        asyncio.run(run())
    except (PaymentError, OSError) as exc:
        _fail(str(exc))
    except UnicodeDecodeError as exc:
        _fail(f"{path}: not UTF-8 text (byte {exc.start})")


def _registers(pairs: list[str], option: str) -> dict[str, Decimal]:
    """``QUANTITY=KWH`` pairs as finite, non-negative register values (the shared number check)."""
    values = {}
    for pair in pairs:
        quantity, sign, text = pair.partition("=")
        if not sign or not re.fullmatch(r"[a-z][a-z0-9_]*", quantity.strip()):
            _fail(f"{option} {pair[:60]!r}: expected QUANTITY=KWH, e.g. energy_import_kwh=1234.56")
        try:
            values[quantity.strip()] = limits.register_kwh(text, f"{option} {quantity.strip()}")
        except ValueError as exc:
            _fail(str(exc))
    return values


@billing_app.command("replace")
def replace(
    old: str = typer.Argument(..., help="Meter taken out (name or address)."),
    new: str = typer.Argument(..., help="Meter put in (name or address), already in the inventory."),
    at: str = typer.Option(..., "--at", help="When, with a UTC offset, e.g. 2026-11-20T10:30:00+08:00."),
    final: list[str] = typer.Option(..., "--final", help="Old meter's register at removal: QUANTITY=KWH."),
    initial: list[str] = typer.Option(..., "--initial", help="New meter's register: QUANTITY=KWH."),
    operator: str = OperatorOption,
    dsn: str | None = DsnOption,
) -> None:
    """Record a meter replacement: billing splits the period at these register readings."""
    from headend.billing.replacement import record_replacement
    from headend.inventory import InventoryError

    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        _fail(f"--at {at!r} is not an ISO date-time, e.g. 2026-11-20T10:30:00+08:00")
    final_registers = _registers(final, "--final")
    initial_registers = _registers(initial, "--initial")

    async def run() -> int:
        conn = await asyncpg.connect(resolve_dsn(dsn))
        try:
            return await record_replacement(
                conn,
                old,
                new,
                at=when,
                final=final_registers,
                initial=initial_registers,
                operator=operator,
            )
        finally:
            await conn.close()

    try:
        record = asyncio.run(run())
    except (ValueError, InventoryError, asyncpg.UniqueViolationError) as exc:
        _fail(
            str(exc)
            if not isinstance(exc, asyncpg.UniqueViolationError)
            else f"meter {old} or {new} already has a replacement record"
        )
    typer.echo(f"replacement {record} recorded: {new} replaces {old} at {when.isoformat()}")


@billing_app.command("status")
def status(account: str | None = typer.Argument(None), dsn: str | None = DsnOption) -> None:
    """Balance, arrears flag and notice of one account or all accounts, as JSON lines."""

    async def run() -> None:
        conn = await asyncpg.connect(resolve_dsn(dsn))
        try:
            rows = await conn.fetch(
                """SELECT a.number, a.kind, coalesce(b.balance, 0)::text AS balance, a.credit_limit::text,
                          a.arrears, a.arrears_since, a.notice_sent_at, a.protected
                   FROM accounts a LEFT JOIN balances b ON b.account_id = a.id
                   WHERE $1::text IS NULL OR a.number = $1 ORDER BY a.number""",
                account,
            )
        finally:
            await conn.close()
        if account is not None and not rows:
            _fail(f"unknown account {account!r}")
        for row in rows:
            typer.echo(json.dumps(dict(row), default=str))

    asyncio.run(run())


@billing_app.command("bill")
def bill(
    start: datetime = typer.Option(..., "--from", help="Period start (ISO, UTC if no offset)."),
    end: datetime = typer.Option(..., "--to", help="Period end."),
    due_days: int = typer.Option(15, help="Postpaid bills are due this many days after --to."),
    dsn: str | None = DsnOption,
) -> None:
    """Bill every active account with a tariff for one period (once per period); exit 1 if any failed."""
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    if end <= start:
        _fail(f"--to {end.isoformat()} must be after --from {start.isoformat()}")
    try:
        limits.days(due_days, "--due-days")
    except ValueError as exc:
        _fail(str(exc))

    async def run() -> int:
        conn = await asyncpg.connect(resolve_dsn(dsn))
        failed = 0
        try:
            for acc in await conn.fetch(
                "SELECT id, number FROM accounts WHERE active AND tariff_id IS NOT NULL ORDER BY number"
            ):
                try:
                    amount = await bill_account(conn, acc["id"], start, end, due_days=due_days)
                    typer.echo(f"{acc['number']}: {amount}")
                except (BillingError, TariffError) as exc:
                    failed += 1
                    typer.echo(f"{acc['number']}: not billed: {exc}", err=True)
        finally:
            await conn.close()
        return failed

    if asyncio.run(run()):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach ``headend billing``."""
    app.add_typer(billing_app, name="billing")
