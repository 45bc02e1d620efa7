"""``headend accounts``: create, change, list and show accounts; assign meters with effective times."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, TypeVar

import asyncpg
import typer

from headend import limits
from headend.billing.accounts import AccountError, add_account, assign_meter, set_account
from headend.commands.app import CommandGroup
from headend.commands.auth import OperatorId, login
from headend.commands.common import Dsn, fail, run_with_conn
from headend.commands.timerange import TimeRangeError, time_range
from headend.commands.views import echo_fields, echo_json, echo_table, money, text, time_text
from headend.operators import OperatorError
from headend.store.accounts import accounts, assignments
from headend.store.overview import account_statement

accounts_app = CommandGroup(help="Accounts and meter-to-account assignments.", no_args_is_help=True)
T = TypeVar("T")
ROLE = "admin"  # accounts, their settings and meter assignments are inventory: an admin's job


def _with_conn(dsn: str | None, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``work`` on one connection; a refused change is one error line."""
    try:
        return run_with_conn(dsn, work)
    except (AccountError, OperatorError, asyncpg.InsufficientPrivilegeError) as exc:
        fail(str(exc))


def _as_admin(operator: str, dsn: str | None, work: Callable[[asyncpg.Connection, str], Awaitable[T]]) -> T:
    """``work(conn, operator id)`` after signing in as ``operator`` with the admin role."""
    admin = login(operator)

    async def signed_in(conn: asyncpg.Connection) -> T:
        await admin.sign_in(conn, ROLE)
        return await work(conn, admin.operator_id)

    return _with_conn(dsn, signed_in)


def _money(text: str, option: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        fail(f"{option} {text!r} is not an amount")
    if not value.is_finite() or abs(value) >= Decimal("1e12"):
        fail(f"{option} {text!r} must be a finite amount below 1e12")
    return value


def _credit_limit(text: str, option: str) -> Decimal:
    """A credit limit: an amount of zero or more (arrears start below minus this)."""
    value = _money(text, option)
    if value < 0:
        fail(f"{option} {text}: must be zero or positive (arrears start below minus the limit)")
    return value


MAX_NUMBER = 64  # an account number as printed on a bill


@accounts_app.command("add")
def add(
    number: str,
    kind: Annotated[str, typer.Option("--kind", help="prepaid | postpaid")],
    operator: OperatorId,
    name: Annotated[str, typer.Option("--name")] = "",
    tariff: Annotated[
        str | None, typer.Option("--tariff", help="Tariff name (see `headend tariffs list`).")
    ] = None,
    credit_limit: Annotated[
        str, typer.Option("--credit-limit", help="Prepaid: arrears below -credit limit.")
    ] = "0",
    dsn: Dsn = None,
) -> None:
    """Create an account (an operator with the admin role)."""
    if not number.strip() or number != number.strip() or len(number) > MAX_NUMBER:
        fail(f"account number {number[:40]!r} must be 1..{MAX_NUMBER} characters without surrounding spaces")
    limit = _credit_limit(credit_limit, "--credit-limit")
    _as_admin(
        operator,
        dsn,
        lambda c, me: add_account(c, number, kind, name=name, tariff=tariff, credit_limit=limit, operator=me),
    )
    typer.echo(f"account {number} created")


@accounts_app.command("set")
def set_(
    number: str,
    values: Annotated[
        list[str],
        typer.Argument(
            help="KEY=VALUE: name, tariff, credit_limit, grace_days, "
            "protected, protected_reason, reconnect_mode (close|close_allowed), "
            "alarm_before_cut (true|false|policy), active"
        ),
    ],
    operator: OperatorId,
    dsn: Dsn = None,
) -> None:
    """Change account settings (an operator with the admin role)."""
    changes: dict[str, object] = {}
    for pair in values:
        key, sep, text = pair.partition("=")
        if not sep:
            fail(f"{pair!r}: expected KEY=VALUE")
        if key in ("protected", "active"):
            if text not in ("true", "false"):
                fail(f"{key} must be true or false")
            changes[key] = text == "true"
        elif key == "credit_limit":
            changes[key] = _credit_limit(text, key)
        elif key == "grace_days":
            if not text.isdigit():
                fail("grace_days must be a whole number of days")
            changes[key] = int(text)
        else:
            changes[key] = text
    _as_admin(operator, dsn, lambda c, me: set_account(c, number, changes, operator=me))
    typer.echo(f"account {number} changed")


@accounts_app.command("list")
def list_(dsn: Dsn = None) -> None:
    """Every account, as JSON lines."""
    for row in _with_conn(dsn, lambda c: accounts(c)):
        typer.echo(json.dumps(dict(row), default=str))


@accounts_app.command("show")
def show(number: str, dsn: Dsn = None) -> None:
    """One account with its meter assignments, as JSON."""

    async def work(conn: asyncpg.Connection) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        return await accounts(conn, number), await assignments(conn, number)

    rows, history = _with_conn(dsn, work)
    if not rows:
        fail(f"unknown account {number!r}")
    typer.echo(
        json.dumps({**dict(rows[0]), "assignments": [dict(r) for r in history]}, default=str, indent=2)
    )


@accounts_app.command("assign")
def assign(
    meter: str,
    account: str,
    at: Annotated[
        str, typer.Option("--from", help="Effective from, with a UTC offset, e.g. 2026-11-20T00:00:00+08:00.")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why (tenant change ...), in the audit log.")],
    operator: OperatorId,
    reading: Annotated[
        str | None, typer.Option("--reading", help="Register at the move (kWh), read on site.")
    ] = None,
    dsn: Dsn = None,
) -> None:
    """Assign a meter to an account from a time on; the previous account's assignment ends then (an
    operator with the admin role; one that also reconnects a relay left open for the previous tenant
    needs the operator role too)."""
    try:
        value = None if reading is None else limits.register_kwh(reading, "--reading")
    except ValueError as exc:
        fail(str(exc))
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        fail(f"--from {at!r} is not an ISO date-time")
    _as_admin(
        operator,
        dsn,
        lambda c, me: assign_meter(c, meter, account, at=when, operator=me, reason=reason, reading=value),
    )
    typer.echo(f"meter {meter} assigned to {account} from {time_text(when)}")


@accounts_app.command("statement")
def statement(
    number: Annotated[str, typer.Argument(help="The account number.")],
    start: Annotated[str, typer.Option("--from", help="From (a date: local midnight; or a time).")],
    end: Annotated[str, typer.Option("--to", help="Up to, not including.")],
    zone: Annotated[str, typer.Option("--timezone", help="Local time of dates.")] = "Asia/Shanghai",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    dsn: Dsn = None,
) -> None:
    """The ledger of a period: opening balance, every charge, payment and adjustment with the running
    balance, the closing balance, and the period's bills. Amounts in the account's currency, 2 places."""
    try:
        first, last, _ = time_range(start, end, zone)
    except TimeRangeError as exc:
        fail(str(exc))
    found = run_with_conn(dsn, lambda c: account_statement(c, number, first, last))
    if found is None:
        fail(f"unknown account {number!r}")
    balance = Decimal(str(found.fields["opening"]))
    entries = []
    for entry in found.lists["entries"]:
        balance += Decimal(str(entry["amount"]))
        entries.append({**entry, "balance": balance})
    if as_json:
        echo_json({**found.fields, "entries": entries, "closing": balance, "bills": found.lists["bills"]})
        return
    echo_fields(
        {
            "account": found.fields["number"],
            "name": found.fields["name"],
            "kind": found.fields["kind"],
            "period": f"{text(first)} .. {text(last)}",
            "opening balance": money(str(found.fields["opening"])),
            "closing balance": money(balance),
        }
    )
    ledger = [{**e, "amount": money(str(e["amount"])), "balance": money(str(e["balance"]))} for e in entries]
    echo_table("ledger", ("at", "kind", "amount", "balance", "kwh", "reference"), ledger)
    echo_table(
        "bills",
        ("id", "period_start", "period_end", "consumption", "amount", "due_at", "paid_at"),
        [{**b, "amount": money(str(b["amount"]))} for b in found.lists["bills"]],
    )


def register(app: typer.Typer) -> None:
    """Attach ``headend accounts``."""
    app.add_typer(accounts_app, name="accounts")
