"""``headend billing``: payments (one-off and CSV file), account status, billing runs, meter replacement."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import typer

from headend import limits
from headend.billing.charging import BillingError, bill_account
from headend.billing.payments import PaymentError, PaymentOutcome, import_csv, parse_amount, record_payment
from headend.billing.tariff import TariffError
from headend.commands.auth import OperatorOption, login
from headend.commands.common import DsnOption, fail, run_with_conn
from headend.operators import OperatorError
from headend.store.accounts import account_statuses, billable_accounts

billing_app = typer.Typer(
    help="Billing: payments, account status, billing runs, meter replacement.", no_args_is_help=True
)


@billing_app.command("pay")
def pay(
    account: str,
    amount: str,
    ref: str = typer.Option(..., "--ref", help="Payment reference (idempotent)."),
    operator: str = OperatorOption,
    dsn: str | None = DsnOption,
) -> None:
    """Record a payment once per reference (an operator with the cashier role)."""
    cashier = login(operator)

    async def work(conn: asyncpg.Connection) -> PaymentOutcome:
        await cashier.sign_in(conn, "cashier")
        return await record_payment(conn, account, parse_amount(amount), ref, operator=cashier.operator_id)

    try:
        outcome = run_with_conn(dsn, work)
    except (PaymentError, OperatorError) as exc:
        fail(str(exc))
    word = "recorded" if outcome.recorded else "already recorded"
    typer.echo(f"{account}: payment {ref} {word}; balance {outcome.balance}")


@billing_app.command("import")
def import_file(path: Path, operator: str = OperatorOption, dsn: str | None = DsnOption) -> None:
    """Import a CSV payment file (account,amount,reference); nothing is stored if any row is bad."""
    cashier = login(operator)

    async def work(conn: asyncpg.Connection) -> list[PaymentOutcome]:
        await cashier.sign_in(conn, "cashier")
        return await import_csv(conn, text, operator=cashier.operator_id, source=f"import:{path.name}")

    try:
        text = path.read_text(encoding="utf-8")
        done = run_with_conn(dsn, work)
    except (PaymentError, OperatorError, OSError) as exc:
        fail(str(exc))
    except UnicodeDecodeError as exc:
        fail(f"{path}: not UTF-8 text (byte {exc.start})")
    recorded = sum(o.recorded for o in done)
    typer.echo(f"{recorded} recorded, {len(done) - recorded} duplicates")


def _registers(pairs: list[str], option: str) -> dict[str, Decimal]:
    """``QUANTITY=KWH`` pairs as finite, non-negative register values (the shared number check)."""
    values = {}
    for pair in pairs:
        quantity, sign, text = pair.partition("=")
        if not sign or not re.fullmatch(r"[a-z][a-z0-9_]*", quantity.strip()):
            fail(f"{option} {pair[:60]!r}: expected QUANTITY=KWH, e.g. energy_import_kwh=1234.56")
        try:
            values[quantity.strip()] = limits.register_kwh(text, f"{option} {quantity.strip()}")
        except ValueError as exc:
            fail(str(exc))
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
    """Record a meter replacement: billing splits the period at these register readings (admin)."""
    admin = login(operator)
    from headend.billing.replacement import record_replacement
    from headend.inventory import InventoryError

    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        fail(f"--at {at!r} is not an ISO date-time, e.g. 2026-11-20T10:30:00+08:00")

    registers = _registers(final, "--final"), _registers(initial, "--initial")

    async def work(conn: asyncpg.Connection) -> int:
        await admin.sign_in(conn, "admin")
        return await record_replacement(
            conn, old, new, at=when, final=registers[0], initial=registers[1], operator=admin.operator_id
        )

    try:
        record = run_with_conn(dsn, work)
    except (ValueError, InventoryError, OperatorError, asyncpg.UniqueViolationError) as exc:
        fail(
            str(exc)
            if not isinstance(exc, asyncpg.UniqueViolationError)
            else f"meter {old} or {new} already has a replacement record"
        )
    typer.echo(f"replacement {record} recorded: {new} replaces {old} at {when.isoformat()}")


@billing_app.command("status")
def status(account: str | None = typer.Argument(None), dsn: str | None = DsnOption) -> None:
    """Balance, arrears flag and notice of one account or all accounts, as JSON lines."""

    rows = run_with_conn(dsn, lambda c: account_statuses(c, account))
    if account is not None and not rows:
        fail(f"unknown account {account!r}")
    for row in rows:
        typer.echo(json.dumps(dict(row), default=str))


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
        fail(f"--to {end.isoformat()} must be after --from {start.isoformat()}")
    try:
        limits.days(due_days, "--due-days")
    except ValueError as exc:
        fail(str(exc))

    async def run(conn: asyncpg.Connection) -> int:
        failed = 0
        for acc in await billable_accounts(conn):
            try:
                amount = await bill_account(conn, acc["id"], start, end, due_days=due_days)
                typer.echo(f"{acc['number']}: {amount}")
            except (BillingError, TariffError) as exc:
                failed += 1
                typer.echo(f"{acc['number']}: not billed: {exc}", err=True)
        return failed

    if run_with_conn(dsn, run):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach ``headend billing``."""
    app.add_typer(billing_app, name="billing")
