"""``headend billing``: payments (one-off and CSV file), account status, billing runs, meter replacement."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import asyncpg
import typer

from headend.billing.charging import BillingError, bill_account
from headend.billing.payments import PaymentError, import_csv, parse_amount, record_payment
from headend.billing.tariff import TariffError
from headend.billing.vee import HoldError, resolve_hold, validate_new
from headend.config import ConfigError, HeadendConfig, load_config
from headend.store.billing import account_status, billable_accounts
from headend.store.dsn import resolve_dsn
from headend.store.vee import open_holds

billing_app = typer.Typer(
    help="Billing: payments, account status, billing runs, meter replacement.", no_args_is_help=True
)
DsnOption = typer.Option(None, "--dsn", help="PostgreSQL DSN (default: $HEADEND_DSN, else embedded server).")
OperatorOption = typer.Option(..., "--operator", help="Operator id recorded in the audit log.")
ConfigOption = typer.Option(
    None, "--config", "-c", help="Config file (default: $HEADEND_CONFIG, else defaults)."
)


def _config(path: Path | None) -> HeadendConfig:
    chosen = path or (Path(os.environ["HEADEND_CONFIG"]) if os.environ.get("HEADEND_CONFIG") else None)
    try:
        return load_config(chosen)
    except ConfigError as exc:
        _fail(str(exc))
        raise


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


def _registers(pairs: list[str], option: str) -> dict[str, Decimal]:
    values = {}
    for pair in pairs:
        quantity, _, text = pair.partition("=")
        try:
            values[quantity.strip()] = Decimal(text)
        except InvalidOperation:
            _fail(f"{option} {pair!r}: expected QUANTITY=KWH, e.g. energy_import_kwh=1234.56")
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

    async def run() -> int:
        conn = await asyncpg.connect(resolve_dsn(dsn))
        try:
            return await record_replacement(
                conn,
                old,
                new,
                at=when,
                final=_registers(final, "--final"),
                initial=_registers(initial, "--initial"),
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
            rows = await account_status(conn, account)
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
    due_days: int | None = typer.Option(
        None, help="Postpaid bills are due this many days after --to (default: [billing] due_days)."
    ),
    config: Path | None = ConfigOption,
    dsn: str | None = DsnOption,
) -> None:
    """Validate new readings, then bill every active account with a tariff for one period (once per
    period); exit 1 if any account was not billed."""
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    days = due_days if due_days is not None else _config(config).billing.due_days

    async def run() -> int:
        conn = await asyncpg.connect(resolve_dsn(dsn))
        failed = 0
        try:
            await validate_new(conn)
            for acc in await billable_accounts(conn):
                try:
                    amount = await bill_account(conn, acc["id"], start, end, due_days=days)
                    typer.echo(f"{acc['number']}: {amount}")
                except (BillingError, TariffError) as exc:
                    failed += 1
                    typer.echo(f"{acc['number']}: not billed: {exc}", err=True)
        finally:
            await conn.close()
        return failed

    if asyncio.run(run()):
        raise typer.Exit(1)


@billing_app.command("holds")
def holds(
    meter: str | None = typer.Argument(None, help="Only this meter (name or address)."),
    dsn: str | None = DsnOption,
) -> None:
    """Registers held for unresolved suspect data (billing and automatic disconnection wait), as JSON
    lines with the reason."""
    from headend.inventory import InventoryError, find_meter

    async def run() -> list[dict[str, object]]:
        conn = await asyncpg.connect(resolve_dsn(dsn))
        try:
            meter_id = None if meter is None else (await find_meter(conn, meter))[0]
            return [dict(r) for r in await open_holds(conn, meter_id)]
        finally:
            await conn.close()

    try:
        rows = asyncio.run(run())
    except InventoryError as exc:
        _fail(str(exc))
    if not rows:
        typer.echo("no holds")
    for row in rows:
        typer.echo(json.dumps(row, default=str))


@billing_app.command("resolve")
def resolve(
    hold: int = typer.Argument(..., help="Hold id (see `headend billing holds`)."),
    resolution: str = typer.Argument(..., help="accepted | replaced | corrected"),
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the audit log)."),
    final: float | None = typer.Option(None, help="replaced: the old register's final value (kWh)."),
    initial: float | None = typer.Option(None, help="replaced: the new register's initial value (kWh)."),
    value: float | None = typer.Option(None, help="corrected: the right value of the first suspect reading."),
    operator: str = OperatorOption,
    dsn: str | None = DsnOption,
) -> None:
    """Resolve a hold: the data is real (accepted), the meter was swapped in place (replaced: billing
    splits there), or the first suspect reading is corrected (estimated)."""

    async def run() -> None:
        conn = await asyncpg.connect(resolve_dsn(dsn))
        try:
            await resolve_hold(
                conn,
                hold,
                resolution,
                operator=operator,
                reason=reason,
                final=final,
                initial=initial,
                corrected=value,
            )
        finally:
            await conn.close()

    try:
        asyncio.run(run())
    except HoldError as exc:
        _fail(str(exc))
    typer.echo(f"hold {hold} {resolution}")


@billing_app.command("adjust", context_settings={"ignore_unknown_options": True})  # amount -12.50
def adjust_command(
    account: str,
    amount: str = typer.Argument(..., help="Signed: 12.50 credits the account, -12.50 debits it."),
    ref: str = typer.Option(..., "--ref", help="Adjustment reference (idempotent)."),
    reason: str = typer.Option(
        ..., "--reason", help="Why (refund, correction ...), in the ledger and audit log."
    ),
    operator: str = OperatorOption,
    dsn: str | None = DsnOption,
) -> None:
    """A ledger adjustment (refund or correction) with reason and operator, once per reference."""
    from headend.billing.adjustments import adjust, parse_signed_amount

    async def run() -> tuple[bool, Decimal]:
        conn = await asyncpg.connect(resolve_dsn(dsn))
        try:
            return await adjust(
                conn, account, parse_signed_amount(amount), reference=ref, reason=reason, operator=operator
            )
        finally:
            await conn.close()

    try:
        recorded, balance = asyncio.run(run())
    except PaymentError as exc:
        _fail(str(exc))
    typer.echo(
        f"{account}: adjustment {ref} {'recorded' if recorded else 'already recorded'}; balance {balance}"
    )


def register(app: typer.Typer) -> None:
    """Attach ``headend billing``."""
    app.add_typer(billing_app, name="billing")
