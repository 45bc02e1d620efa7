"""``headend tariffs``: add, list and show tariffs (flat, time of use, tiered monthly blocks)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import typer

from headend.billing.tariff import TariffError, coverage_gaps, parse_block, parse_slot
from headend.commands.app import CommandGroup
from headend.commands.auth import OperatorId, login
from headend.commands.common import Dsn, fail, run_with_conn
from headend.operators import OperatorError
from headend.store.audit import audit
from headend.store.tariffs import (
    insert_prices,
    insert_revision,
    insert_tariff,
    last_charged_end,
    tariff_by_name,
    tariffs,
)

tariffs_app = CommandGroup(
    help="Tariffs: flat, time of use, tiered monthly blocks (阶梯电价).", no_args_is_help=True
)
REGISTERS = ("total", "t1", "t2", "t3", "t4")


MAX_PRICE = Decimal(1_000_000)  # tariff_prices.price is numeric(12, 6)


def _definition(
    kind: str, prices: list[str], blocks: list[str], slots: list[str], zone: str
) -> tuple[dict[str, object], list[tuple[str, Decimal]]]:
    """Check the options against the kind; the stored definition and the register prices."""
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise TariffError(f"unknown time zone {zone!r}") from None
    registers: list[tuple[str, Decimal]] = []
    for pair in prices:
        register, _, text = pair.partition("=")
        try:
            price = Decimal(text)
        except InvalidOperation:
            raise TariffError(f"--price {pair!r}: expected REGISTER=PRICE, e.g. total=0.56") from None
        if not price.is_finite() or not 0 <= price < MAX_PRICE:
            raise TariffError(
                f"--price {pair[:60]}: price must be a finite amount from 0 to below {MAX_PRICE}"
            )
        if register not in REGISTERS:
            raise TariffError(f"--price {pair!r}: register one of {', '.join(REGISTERS)}, price >= 0")
        registers.append((register, price))
    if kind == "flat":
        if [r for r, _ in registers] != ["total"] or blocks or slots:
            raise TariffError("a flat tariff takes exactly --price total=PRICE")
        return {}, registers
    if kind == "tiered":
        parsed = [parse_block(b) for b in blocks]
        if not parsed or parsed[-1].upto is not None or registers or slots:
            raise TariffError("a tiered tariff takes --block UPTO=PRICE ..., the last one *=PRICE")
        uppers = [b.upto for b in parsed[:-1]]
        if any(u is None for u in uppers) or uppers != sorted(uppers):  # type: ignore[type-var]
            raise TariffError("blocks go up: 200=..., 400=..., *=...")
        stored = [{"upto": None if b.upto is None else str(b.upto), "price": str(b.price)} for b in parsed]
        return {"blocks": stored, "timezone": zone}, []
    if kind != "tou":
        raise TariffError("kind must be flat, tou or tiered")
    gaps = coverage_gaps([parse_slot(slot) for slot in slots])
    if bool(slots) == bool(registers) or blocks:
        raise TariffError(
            "a time-of-use tariff takes either --price t1=... (the meter's tariff registers) or --slot"
        )
    if slots and gaps:
        raise TariffError(f"the slots leave {gaps} without a price; add a --slot for those hours")
    return ({"slots": slots, "timezone": zone} if slots else {}), registers


@tariffs_app.command("add")
def add(
    name: str,
    kind: Annotated[str, typer.Option("--kind", help="flat | tou | tiered")],
    operator: OperatorId,
    price: Annotated[
        list[str] | None, typer.Option("--price", help="REGISTER=PRICE (flat: total; tou: t1..t4).")
    ] = None,
    block: Annotated[
        list[str] | None, typer.Option("--block", help="tiered: UPTO=PRICE per month, last *=PRICE.")
    ] = None,
    slot: Annotated[
        list[str] | None,
        typer.Option(
            "--slot",
            help="tou by time of day (and season): [MM-DD..MM-DD:]HH:MM-HH:MM=PRICE, first match wins.",
        ),
    ] = None,
    timezone: Annotated[
        str, typer.Option("--timezone", help="Local time of slots and months.")
    ] = "Asia/Shanghai",
    effective: Annotated[
        str, typer.Option("--from", help="Register prices valid from.")
    ] = "2000-01-01T00:00:00+00:00",
    dsn: Dsn = None,
) -> None:
    """Add a tariff (an operator with the admin role; audited)."""
    try:
        definition, registers = _definition(kind, price or [], block or [], slot or [], timezone)
        since = datetime.fromisoformat(effective)
    except (TariffError, ValueError) as exc:
        fail(str(exc))
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    admin = login(operator)

    async def work(conn: asyncpg.Connection) -> None:
        await admin.sign_in(conn, "admin")
        async with conn.transaction():
            await insert_tariff(conn, name, kind, definition, registers, since)
            details = {"kind": kind, "definition": definition, "prices": {r: str(p) for r, p in registers}}
            await audit(conn, admin.operator_id, "tariff.added", "tariff", name, "tariffs add", details)

    try:
        run_with_conn(dsn, work)
    except asyncpg.UniqueViolationError:
        fail(f"tariff {name!r} exists already")
    except (OperatorError, asyncpg.InsufficientPrivilegeError) as exc:
        fail(str(exc))
    typer.echo(f"tariff {name} added")


@tariffs_app.command("set")
def set_(
    name: str,
    effective: Annotated[
        str, typer.Option("--from", help="When the revision takes effect (ISO 8601, with its offset).")
    ],
    operator: OperatorId,
    price: Annotated[
        list[str] | None, typer.Option("--price", help="REGISTER=PRICE, every register of the tariff.")
    ] = None,
    block: Annotated[
        list[str] | None, typer.Option("--block", help="tiered: the new UPTO=PRICE blocks.")
    ] = None,
    slot: Annotated[list[str] | None, typer.Option("--slot", help="tou: the new set of slots.")] = None,
    dsn: Dsn = None,
) -> None:
    """Revise a tariff's prices, blocks or slots from a time on (admin; audited). Billing charges each
    part of a period at what is in force in it; a revision may not reach back into a charged period."""
    try:
        since = datetime.fromisoformat(effective)
    except ValueError:
        fail(f"--from {effective!r}: expected an ISO 8601 time, e.g. 2026-08-01T00:00:00+08:00")
    if since.tzinfo is None:
        fail(f"--from {effective!r}: give its UTC offset, e.g. +08:00")
    admin = login(operator)

    async def work(conn: asyncpg.Connection) -> None:
        await admin.sign_in(conn, "admin")
        async with conn.transaction():
            row = await tariff_by_name(conn, name)
            if row is None:
                raise TariffError(f"unknown tariff {name!r}")
            stored = json.loads(row["definition"])
            zone = str(stored.get("timezone", "Asia/Shanghai"))
            if row["kind"] == "tou" and bool(stored.get("slots")) != bool(slot):
                how = "--slot (the new set of slots)" if stored.get("slots") else "--price for its registers"
                raise TariffError(f"tariff {name!r} is revised with {how}")
            definition, registers = _definition(row["kind"], price or [], block or [], slot or [], zone)
            charged = await last_charged_end(conn, row["id"])
            if charged is not None and since < charged:
                raise TariffError(
                    f"--from {since.isoformat()} is before {charged.isoformat()}, the end of a period"
                    " already charged on this tariff; a revision only applies from then on"
                )
            if registers:
                if sorted(r for r, _ in registers) != sorted(row["registers"]):
                    raise TariffError(
                        f"give a price for each of the registers {', '.join(sorted(row['registers']))}"
                    )
                await insert_prices(conn, row["id"], registers, since)
            else:
                await insert_revision(conn, row["id"], definition, since)
            details = {
                "from": since.isoformat(),
                "definition": definition,
                "prices": {r: str(p) for r, p in registers},
            }
            await audit(conn, admin.operator_id, "tariff.revised", "tariff", name, "tariffs set", details)

    try:
        run_with_conn(dsn, work)
    except TariffError as exc:
        fail(str(exc))
    except asyncpg.UniqueViolationError:
        fail(f"tariff {name!r} already has a revision from {since.isoformat()}")
    except (OperatorError, asyncpg.InsufficientPrivilegeError) as exc:
        fail(str(exc))
    typer.echo(f"tariff {name} revised from {since.isoformat()}")


def _rows(name: str | None, dsn: str | None) -> list[dict[str, object]]:
    """Tariffs (one, or all) with their definition and prices decoded."""
    rows = run_with_conn(dsn, lambda conn: tariffs(conn, name))
    return [
        {
            **dict(r),
            "definition": json.loads(r["definition"]),
            "prices": json.loads(r["prices"]),
            "revisions": json.loads(r["revisions"]),
        }
        for r in rows
    ]


@tariffs_app.command("list")
def list_(dsn: Dsn = None) -> None:
    """Every tariff, as JSON lines."""
    for row in _rows(None, dsn):
        typer.echo(json.dumps(row, default=str, ensure_ascii=False))


@tariffs_app.command("show")
def show(name: str, dsn: Dsn = None) -> None:
    """One tariff with its prices, blocks or slots, as JSON."""
    rows = _rows(name, dsn)
    if not rows:
        fail(f"unknown tariff {name!r}")
    typer.echo(json.dumps(rows[0], default=str, indent=2, ensure_ascii=False))


def register(app: typer.Typer) -> None:
    """Attach ``headend tariffs``."""
    app.add_typer(tariffs_app, name="tariffs")
