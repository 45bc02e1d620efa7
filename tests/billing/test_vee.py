"""Validation before billing on PostgreSQL: rollover only near the top, impossible jumps, swaps held,
holds resolved by an operator (replaced, accepted, corrected) and only then billed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from headend.billing.service import bill_due_prepaid
from headend.billing.vee import HoldError, resolve_hold, validate_new
from headend.store.maintenance import ensure_partitions
from tests.billing.helpers import add_reading, assign_from_start

T0 = datetime(2026, 11, 2, tzinfo=UTC)
Q = timedelta(minutes=15)


async def _accounts(conn: asyncpg.Connection, meters: dict[str, tuple[str, str]]) -> dict[str, int]:
    """One prepaid account (flat 1.00 CNY/kWh) per meter: name -> (protocol, settings JSON); meter ids."""
    await ensure_partitions(conn, T0 - timedelta(days=1), T0 + timedelta(days=2))
    tariff = await conn.fetchval("INSERT INTO tariffs (name, kind) VALUES ('flat', 'flat') RETURNING id")
    await conn.execute(
        "INSERT INTO tariff_prices (tariff_id, register, price, effective_from)"
        " VALUES ($1, 'total', 1, '2000-01-01Z')",
        tariff,
    )
    channel = await conn.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
    )
    ids = {}
    for n, (name, (protocol, settings)) in enumerate(meters.items(), start=1):
        account = await conn.fetchval(
            "INSERT INTO accounts (number, kind, tariff_id) VALUES ($1, 'prepaid', $2) RETURNING id",
            name,
            tariff,
        )
        ids[name] = await conn.fetchval(
            "INSERT INTO meters (name, protocol, address, unit_id, model, channel_id, settings)"
            " VALUES ($1, $2, $3, $4, 'm', $5, $6::jsonb) RETURNING id",
            name,
            protocol,
            str(n),
            n if protocol == "modbus" else None,
            channel,
            settings,
        )
        await assign_from_start(conn, ids[name], account)
    return ids


async def _series(conn: asyncpg.Connection, meter: int, values: list[float]) -> None:
    for i, value in enumerate(values):
        await add_reading(conn, meter, T0 + i * Q, value)


async def _balance(conn: asyncpg.Connection, number: str) -> Decimal:
    return Decimal(
        await conn.fetchval(
            "SELECT coalesce((SELECT balance FROM balances b JOIN accounts a ON a.id = b.account_id"
            " WHERE a.number = $1), 0)",
            number,
        )
    )


async def test_validation_holds_swaps_and_jumps_and_bills_only_what_is_valid(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        ids = await _accounts(
            conn,
            {
                "WRAP": ("dlt645-2007", "{}"),
                "SWAP": ("modbus", "{}"),
                "DIP": ("dlt645-2007", "{}"),
                "JUMP": ("dlt645-2007", '{"voltage_v": 220, "max_current_a": 60, "phases": 1}'),
            },
        )
        await _series(conn, ids["WRAP"], [999999.5, 0.4, 1.4])  # a real rollover near the top
        await _series(conn, ids["SWAP"], [4344.04, 4345.04, 1520.89, 1521.5])  # unrecorded swap
        await _series(conn, ids["DIP"], [7132.0, 7132.17, 7132.10, 7132.3])  # read back a little lower
        await _series(conn, ids["JUMP"], [100.0, 101.0, 150.0, 151.0])  # 49 kWh in 15 min on 13.2 kW
        report = await validate_new(conn)
        assert report.readings == 15 and report.suspect == 6
        held = {m: r for m, r in report.holds}
        assert set(held) == {ids["SWAP"], ids["DIP"], ids["JUMP"]}
        assert "4345.04 -> 1520.89" in held[ids["SWAP"]] and "no wrap width" in held[ids["SWAP"]]
        assert "not near the top" in held[ids["DIP"]] and "rating" in held[ids["JUMP"]]
        qualities = await conn.fetch(
            "SELECT meter_id, count(*) FROM readings WHERE quality = 'suspect' GROUP BY meter_id ORDER BY 1"
        )
        assert [tuple(r) for r in qualities] == [(ids["SWAP"], 2), (ids["DIP"], 2), (ids["JUMP"], 2)]
        assert (await validate_new(conn)).readings == 0  # validated once

        periods = {p.account: p for p in await bill_due_prepaid(conn)}
        assert periods["WRAP"].amount == Decimal("1.90")  # 999999.5 -> 1.4 across the top
        for name in ("SWAP", "DIP", "JUMP"):
            assert periods[name].amount is None and "held" in (periods[name].error or "")
            assert await _balance(conn, name) == 0

        hold = {r["meter_id"]: r["id"] for r in await conn.fetch("SELECT id, meter_id FROM vee_holds")}
        with pytest.raises(HoldError, match="decrease is not consumption"):
            await resolve_hold(conn, hold[ids["SWAP"]], "accepted", operator="op1", reason="looks fine")
        await resolve_hold(
            conn, hold[ids["SWAP"]], "replaced", operator="tech2", reason="swapped on site", final=4345.5
        )
        await resolve_hold(conn, hold[ids["JUMP"]], "accepted", operator="op1", reason="welding shop test")
        await resolve_hold(
            conn, hold[ids["DIP"]], "corrected", operator="op1", reason="misread", corrected=7132.2
        )
        assert await conn.fetchval("SELECT count(*) FROM vee_holds WHERE resolved_at IS NULL") == 0
        periods = {p.account: p for p in await bill_due_prepaid(conn)}
        # SWAP: (4345.50 - 4344.04) old device + (1521.50 - 1520.89) new device = 2.07
        assert periods["SWAP"].amount == Decimal("2.07")
        assert periods["JUMP"].amount == Decimal("51.00")
        assert periods["DIP"].amount == Decimal("0.30")  # 7132.0 -> 7132.2 (estimated) -> 7132.3
        assert await conn.fetchval("SELECT quality::text FROM readings WHERE value = 7132.2") == "estimated"
        actions = [
            r["action"] for r in await conn.fetch("SELECT action FROM audit_log WHERE action LIKE 'vee.%'")
        ]
        assert sorted(actions) == [
            "vee.accepted",
            "vee.corrected",
            "vee.hold",
            "vee.hold",
            "vee.hold",
            "vee.replaced",
        ]
    finally:
        await conn.close()


async def test_a_tenant_change_bills_each_part_of_the_period_once(pg_dsn: str) -> None:
    from headend.billing.accounts import AccountError, add_account, assign_meter

    conn = await asyncpg.connect(pg_dsn)
    try:
        ids = await _accounts(conn, {"OLD": ("dlt645-2007", "{}")})
        await _series(conn, ids["OLD"], [100.0, 104.0])
        assert [p.amount for p in await bill_due_prepaid(conn)] == [Decimal("4.00")]
        await add_account(conn, "NEW", "prepaid", tariff="flat", operator="clerk")
        moved_at = T0 + Q + timedelta(minutes=5)
        with pytest.raises(AccountError, match="billed until"):
            await assign_meter(conn, "OLD", "NEW", at=T0, operator="clerk", reason="back-dated")
        await assign_meter(conn, "OLD", "NEW", at=moved_at, operator="clerk", reason="tenant change")
        await add_reading(conn, ids["OLD"], T0 + 2 * Q, 110.0)
        await add_reading(conn, ids["OLD"], T0 + 3 * Q, 111.0)
        billed = [(p.account, p.amount) for p in await bill_due_prepaid(conn)]
        # OLD is billed up to the move (nothing new was used), NEW from the move on: 104 -> 111 only
        assert billed == [("OLD", Decimal("0.00")), ("NEW", Decimal("7.00"))]
        assert await _balance(conn, "OLD") == Decimal("-4.00") and await _balance(conn, "NEW") == Decimal(
            "-7.00"
        )
        assert await bill_due_prepaid(conn) == []
        total = await conn.fetchval("SELECT sum(amount) FROM ledger")
        assert total == Decimal("-11.00")  # 100 -> 111 billed exactly once across both tenants
    finally:
        await conn.close()
