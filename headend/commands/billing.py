"""``headend billing``: payments (one-off and CSV file), account status, billing runs, meter replacement."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import asyncpg
import typer

from headend import limits
from headend.billing.adjustments import adjust, parse_signed_amount
from headend.billing.charging import BillingError, bill_account
from headend.billing.payments import (
    PaymentError,
    PaymentOutcome,
    check_reference,
    import_csv,
    parse_amount,
    record_payment,
)
from headend.billing.replacement import record_replacement
from headend.billing.tariff import TariffError
from headend.billing.vee import HoldError, resolve_hold, validate_new
from headend.commands.app import CommandGroup
from headend.commands.auth import OperatorId, login
from headend.commands.common import ConfigPath, Dsn, chosen_config, fail, run_with_conn
from headend.inventory import InventoryError, find_meter
from headend.operators import OperatorError
from headend.store.accounts import account_statuses, billable_accounts
from headend.store.audit import audit
from headend.store.vee import open_holds

billing_app = CommandGroup(
    help="Billing: payments, account status, billing runs, meter replacement.", no_args_is_help=True
)


@billing_app.command("pay")
def pay(
    account: str,
    amount: str,
    ref: Annotated[str, typer.Option("--ref", help="Payment reference (idempotent).")],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """Record a payment once per reference (an operator with the cashier role)."""
    try:
        value = parse_amount(amount)  # a bad amount is said before the password is asked
    except PaymentError as exc:
        fail(str(exc))
    try:
        check_reference(ref)
    except PaymentError as exc:
        fail(f"--ref: {exc}")
    cashier = login(operator)

    async def work(conn: asyncpg.Connection) -> PaymentOutcome:
        await cashier.sign_in(conn, "cashier")
        return await record_payment(conn, account, value, ref, operator=cashier.operator_id)

    try:
        outcome = run_with_conn(dsn, work)
    except (PaymentError, OperatorError) as exc:
        fail(str(exc))
    word = "recorded" if outcome.recorded else "already recorded"
    typer.echo(f"{account}: payment {ref} {word}; balance {outcome.balance}")


@billing_app.command("import")
def import_file(path: Path, operator: OperatorId, dsn: Dsn = None) -> None:
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
    old: Annotated[str, typer.Argument(help="Meter taken out (name or address).")],
    new: Annotated[str, typer.Argument(help="Meter put in (name or address), already in the inventory.")],
    at: Annotated[str, typer.Option("--at", help="When, with a UTC offset, e.g. 2026-11-20T10:30:00+08:00.")],
    final: Annotated[
        list[str], typer.Option("--final", help="Old meter's register at removal: QUANTITY=KWH.")
    ],
    initial: Annotated[list[str], typer.Option("--initial", help="New meter's register: QUANTITY=KWH.")],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """Record a meter replacement: billing splits the period at these register readings (admin)."""

    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        fail(f"--at {at!r} is not an ISO date-time, e.g. 2026-11-20T10:30:00+08:00")

    registers = _registers(final, "--final"), _registers(initial, "--initial")
    admin = login(operator)  # after the input checks: a typo is said before the password is asked

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
def status(account: Annotated[str | None, typer.Argument()] = None, dsn: Dsn = None) -> None:
    """Balance, arrears flag and notice of one account or all accounts, as JSON lines."""

    rows = run_with_conn(dsn, lambda c: account_statuses(c, account))
    if account is not None and not rows:
        fail(f"unknown account {account!r}")
    for row in rows:
        typer.echo(json.dumps(dict(row), default=str))


@billing_app.command("bill")
def bill(
    start: Annotated[datetime, typer.Option("--from", help="Period start (ISO, UTC if no offset).")],
    end: Annotated[datetime, typer.Option("--to", help="Period end.")],
    operator: OperatorId,
    due_days: Annotated[
        int | None,
        typer.Option(help="Postpaid bills are due this many days after --to (default: [billing] due_days)."),
    ] = None,
    config: ConfigPath = None,
    dsn: Dsn = None,
) -> None:
    """Validate new readings, then bill every active account with a tariff for one period (once per
    period; role cashier); exit 1 if any account was not billed. One audit row names the operator."""
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    if end <= start:
        fail(f"--to {end.isoformat()} must be after --from {start.isoformat()}")
    days = due_days if due_days is not None else chosen_config(config).billing.due_days
    try:
        limits.days(days, "--due-days")
    except ValueError as exc:
        fail(str(exc))
    cashier = login(operator)  # after the input checks: a typo is said before the password is asked

    async def run(conn: asyncpg.Connection) -> int:
        signed_in = await cashier.sign_in(conn, "cashier")
        billed: dict[str, str] = {}
        failed = 0
        await validate_new(conn)
        for acc in await billable_accounts(conn):
            try:
                amount = await bill_account(conn, acc["id"], start, end, due_days=days)
                billed[acc["number"]] = str(amount)
                typer.echo(f"{acc['number']}: {amount}")
            except (BillingError, TariffError) as exc:
                failed += 1
                typer.echo(f"{acc['number']}: not billed: {exc}", err=True)
        period = f"{start.isoformat()}/{end.isoformat()}"
        details = {"billed": billed, "not_billed": failed, "due_days": days}
        await audit(conn, signed_in.id, "billing.run", "billing_period", period, "billing bill", details)
        return failed

    try:
        failed = run_with_conn(dsn, run)
    except (OperatorError, asyncpg.InsufficientPrivilegeError) as exc:
        fail(str(exc))
    if failed:
        raise typer.Exit(1)


@billing_app.command("holds")
def holds(
    meter: Annotated[str | None, typer.Argument(help="Only this meter (name or address).")] = None,
    dsn: Dsn = None,
) -> None:
    """Registers held for unresolved suspect data (billing and automatic disconnection wait), as JSON
    lines with the reason."""

    async def work(conn: asyncpg.Connection) -> list[dict[str, object]]:
        meter_id = None if meter is None else (await find_meter(conn, meter))[0]
        return [dict(r) for r in await open_holds(conn, meter_id)]

    try:
        rows = run_with_conn(dsn, work)
    except InventoryError as exc:
        fail(str(exc))
    if not rows:
        typer.echo("no holds")
    for row in rows:
        typer.echo(json.dumps(row, default=str))


@billing_app.command("resolve")
def resolve(
    hold: Annotated[int, typer.Argument(help="Hold id (see `headend billing holds`).")],
    resolution: Annotated[str, typer.Argument(help="accepted | replaced | corrected")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")],
    operator: OperatorId,
    final: Annotated[
        float | None, typer.Option(help="replaced: the old register's final value (kWh).")
    ] = None,
    initial: Annotated[
        float | None, typer.Option(help="replaced: the new register's initial value (kWh).")
    ] = None,
    value: Annotated[
        float | None, typer.Option(help="corrected: the right value of the first suspect reading.")
    ] = None,
    dsn: Dsn = None,
) -> None:
    """Resolve a hold: the data is real (accepted), the meter was swapped in place (replaced: billing
    splits there), or the first suspect reading is corrected (estimated). An operator with the admin
    role, as for recording a meter replacement."""
    try:
        limits.db_id(hold, "hold id")
        for option, given in (("--final", final), ("--initial", initial), ("--value", value)):
            if given is not None:
                limits.finite(given, option, 0.0, float(limits.MAX_REGISTER_KWH))
    except ValueError as exc:
        fail(str(exc))
    admin = login(operator)

    async def work(conn: asyncpg.Connection) -> None:
        await admin.sign_in(conn, "admin")
        await resolve_hold(
            conn,
            hold,
            resolution,
            operator=admin.operator_id,
            reason=reason,
            final=final,
            initial=initial,
            corrected=value,
        )

    try:
        run_with_conn(dsn, work)
    except (HoldError, OperatorError, asyncpg.InsufficientPrivilegeError) as exc:
        fail(str(exc))
    typer.echo(f"hold {hold} {resolution}")


@billing_app.command("adjust", context_settings={"ignore_unknown_options": True})  # amount -12.50
def adjust_command(
    account: str,
    amount: Annotated[str, typer.Argument(help="Signed: 12.50 credits the account, -12.50 debits it.")],
    ref: Annotated[str, typer.Option("--ref", help="Adjustment reference (idempotent).")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (refund, correction ...), in the ledger and audit log.")
    ],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """A ledger adjustment (refund or correction) with reason and operator, once per reference (an
    operator with the cashier role)."""

    cashier = login(operator)

    async def work(conn: asyncpg.Connection) -> tuple[bool, Decimal]:
        await cashier.sign_in(conn, "cashier")
        return await adjust(
            conn,
            account,
            parse_signed_amount(amount),
            reference=ref,
            reason=reason,
            operator=cashier.operator_id,
        )

    try:
        recorded, balance = run_with_conn(dsn, work)
    except (PaymentError, OperatorError, asyncpg.InsufficientPrivilegeError) as exc:
        fail(str(exc))
    typer.echo(
        f"{account}: adjustment {ref} {'recorded' if recorded else 'already recorded'}; balance {balance}"
    )


def register(app: typer.Typer) -> None:
    """Attach ``headend billing``."""
    app.add_typer(billing_app, name="billing")
