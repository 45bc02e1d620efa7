"""Billing from stored readings on PostgreSQL: TOU with rollover and multiplier, prepaid and postpaid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from headend.billing.charging import BillingError, bill_account
from headend.store import maintenance
from tests.billing.helpers import assign_from_start

T0 = datetime(2026, 11, 1, tzinfo=UTC)
T1 = T0 + timedelta(days=7)


async def _setup(conn: asyncpg.Connection, kind: str, registers: dict[str, tuple[float, float]]) -> int:
    await maintenance.ensure_partitions(conn, T0 - timedelta(days=1), T1)  # a no-op on TimescaleDB
    tariff = await conn.fetchval("INSERT INTO tariffs (name, kind) VALUES ('tou', 'tou') RETURNING id")
    await conn.execute(
        "INSERT INTO tariff_prices (tariff_id, register, price, effective_from) VALUES "
        "($1, 't1', 1.00, $2), ($1, 't2', 0.50, $2), ($1, 't1', 9.99, $3)",
        tariff,
        T0 - timedelta(days=30),
        T1 + timedelta(days=1),
    )
    account = await conn.fetchval(
        "INSERT INTO accounts (number, kind, tariff_id) VALUES ('A', $1, $2) RETURNING id", kind, tariff
    )
    channel = await conn.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
    )
    meter = await conn.fetchval(
        "INSERT INTO meters (protocol, address, model, channel_id, multiplier) "
        "VALUES ('dlt645-2007', '1', 'm', $1, 2) RETURNING id",
        channel,
    )
    await assign_from_start(conn, meter, account)
    source = await conn.fetchval("INSERT INTO reading_sources (name) VALUES ('test') RETURNING id")
    for name, (before, after) in registers.items():
        quantity = await conn.fetchval(
            "INSERT INTO quantities (name) VALUES ($1) "
            "ON CONFLICT (name) DO UPDATE SET name = $1 RETURNING id",
            name,
        )
        await conn.executemany(
            "INSERT INTO readings (meter_id, quantity_id, ts, value, source_id) VALUES ($1, $2, $3, $4, $5)",
            [(meter, quantity, T0, before, source), (meter, quantity, T1, after, source)],
        )
    return account


async def test_prepaid_tou_with_rollover_is_charged_once(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        account = await _setup(
            conn, "prepaid", {"energy_import_t1_kwh": (999990.5, 4.5), "energy_import_t2_kwh": (100.1, 110.2)}
        )
        # t1: 14 kWh (rollover) x2 = 28 -> 28.00; t2: 10.1 x2 = 20.2 kWh x 0.50 = 10.10
        assert await bill_account(conn, account, T0, T1) == Decimal("38.10")
        await bill_account(conn, account, T0, T1)
        assert await conn.fetchval("SELECT balance FROM balances WHERE account_id = $1", account) == Decimal(
            "-38.10"
        )
        assert await conn.fetchval("SELECT count(*) FROM ledger WHERE kind = 'charge'") == 1
    finally:
        await conn.close()


async def test_postpaid_gets_a_bill_with_due_date(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        account = await _setup(
            conn, "postpaid", {"energy_import_t1_kwh": (10, 15), "energy_import_t2_kwh": (0, 0)}
        )
        assert await bill_account(conn, account, T0, T1, due_days=10) == Decimal("10.00")
        bill = await conn.fetchrow("SELECT amount, due_at FROM bills WHERE account_id = $1", account)
        assert bill["amount"] == Decimal("10.00") and bill["due_at"] == T1 + timedelta(days=10)
        # the bill is charged to the ledger (so the ledger always sums to the balance), unpaid until paid
        assert await conn.fetchval("SELECT balance FROM balances") == Decimal("-10.00")
        assert await conn.fetchval("SELECT paid_at FROM bills") is None
    finally:
        await conn.close()


async def test_missing_reading_charges_nothing(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        account = await _setup(conn, "prepaid", {"energy_import_t1_kwh": (10, 15)})  # no t2 readings
        with pytest.raises(BillingError, match="energy_import_t2_kwh"):
            await bill_account(conn, account, T0, T1)
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 0
    finally:
        await conn.close()


async def test_a_period_across_a_meter_replacement_splits_at_final_and_initial(pg_dsn: str) -> None:
    from headend.billing.replacement import record_replacement

    conn = await asyncpg.connect(pg_dsn)
    try:
        # old meter (multiplier 2): t1 500.0 at T0; removed mid-week reading 520.0 (20 kWh x 2 = 40)
        account = await _setup(
            conn, "prepaid", {"energy_import_t1_kwh": (500.0, 999.0), "energy_import_t2_kwh": (100.0, 999.0)}
        )
        old = await conn.fetchval("SELECT meter_id FROM meter_assignments WHERE account_id = $1", account)
        await conn.execute("DELETE FROM readings WHERE meter_id = $1 AND ts = $2", old, T1)
        new = await conn.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id, multiplier) "
            "SELECT 'dlt645-2007', '2', 'm', channel_id, 1 FROM meters WHERE id = $1 RETURNING id",
            old,
        )
        # the new meter (multiplier 1) starts at t1 3.0 / t2 2.0 and reads 13.5 / 7.0 at T1
        for name, value in (("energy_import_t1_kwh", 13.5), ("energy_import_t2_kwh", 7.0)):
            await conn.execute(
                "INSERT INTO readings (meter_id, quantity_id, ts, value, source_id) SELECT $1, q.id, $2, $3,"
                " (SELECT id FROM reading_sources LIMIT 1) FROM quantities q WHERE q.name = $4",
                new,
                T1,
                value,
                name,
            )
        swap_at = T0 + timedelta(days=3)
        final = {"energy_import_t1_kwh": Decimal("520.0"), "energy_import_t2_kwh": Decimal("110.0")}
        initial = {"energy_import_t1_kwh": Decimal("3.0"), "energy_import_t2_kwh": Decimal("2.0")}
        await record_replacement(conn, "1", "2", at=swap_at, final=final, initial=initial, operator="tech9")
        open_account = (
            "(SELECT x.account_id FROM meter_assignments x"
            " WHERE x.meter_id = meters.id AND x.effective_to IS NULL)"
        )
        assert await conn.fetchval(f"SELECT {open_account} FROM meters WHERE id = $1", new) == account
        retired = await conn.fetchrow(f"SELECT {open_account}, enabled FROM meters WHERE id = $1", old)
        assert tuple(retired) == (None, False)
        # t1: ((520 - 500) x 2 + (13.5 - 3.0)) x 1.00 = 50.50; t2: ((110 - 100) x 2 + (7 - 2)) x 0.50 = 12.50
        # (never the raw register jump 500 -> 13.5 of two different devices)
        assert await bill_account(conn, account, T0, T1) == Decimal("63.00")
        audit = await conn.fetchrow("SELECT actor, reason FROM audit_log WHERE action = 'meter.replaced'")
        assert tuple(audit) == ("tech9", "replaced by c/2")  # the generated name: channel/address
        with pytest.raises(asyncpg.UniqueViolationError):  # a meter is taken out once
            await record_replacement(conn, "1", "2", at=swap_at, final=final, initial=initial, operator="t9")
    finally:
        await conn.close()


async def test_a_replacement_of_an_assigned_meter_moves_the_assignment_and_splits_the_bill(
    pg_dsn: str,
) -> None:
    from headend.billing.accounts import assign_meter
    from headend.billing.replacement import record_replacement

    conn = await asyncpg.connect(pg_dsn)
    try:
        # as above, but the account holds the meter through assignment rows (a tenant moved in)
        account = await _setup(
            conn, "prepaid", {"energy_import_t1_kwh": (500.0, 999.0), "energy_import_t2_kwh": (100.0, 999.0)}
        )
        await assign_meter(conn, "1", "A", at=T0 - timedelta(days=1), operator="9001", reason="move in")
        old = await conn.fetchval("SELECT id FROM meters WHERE address = '1'")
        await conn.execute("DELETE FROM readings WHERE meter_id = $1 AND ts = $2", old, T1)
        new = await conn.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id, multiplier) "
            "SELECT 'dlt645-2007', '2', 'm', channel_id, 1 FROM meters WHERE id = $1 RETURNING id",
            old,
        )
        for name, value in (("energy_import_t1_kwh", 13.5), ("energy_import_t2_kwh", 7.0)):
            await conn.execute(
                "INSERT INTO readings (meter_id, quantity_id, ts, value, source_id) SELECT $1, q.id, $2, $3,"
                " (SELECT id FROM reading_sources LIMIT 1) FROM quantities q WHERE q.name = $4",
                new,
                T1,
                value,
                name,
            )
        swap_at = T0 + timedelta(days=3)
        final = {"energy_import_t1_kwh": Decimal("520.0"), "energy_import_t2_kwh": Decimal("110.0")}
        initial = {"energy_import_t1_kwh": Decimal("3.0"), "energy_import_t2_kwh": Decimal("2.0")}
        await record_replacement(conn, "1", "2", at=swap_at, final=final, initial=initial, operator="tech9")
        spans = await conn.fetch(
            "SELECT meter_id, effective_from, effective_to FROM meter_assignments"
            " WHERE account_id = $1 AND effective_to IS DISTINCT FROM $2 ORDER BY effective_from",
            account,
            T0 - timedelta(days=1),
        )
        assert [tuple(r) for r in spans] == [(old, T0 - timedelta(days=1), swap_at), (new, swap_at, None)]
        # the old meter's part closes at its final register, the new one's opens at its initial one
        assert await bill_account(conn, account, T0, T1) == Decimal("63.00")
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("before", "after"),
    [(4345.04, 1520.89), (7132.17, 7132.10)],  # an unrecorded swap; a register read back a little lower
)
async def test_a_decrease_far_from_the_top_is_never_billed_as_a_rollover(
    pg_dsn: str, before: float, after: float
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        account = await _setup(conn, "prepaid", {"energy_import_t1_kwh": (before, after)})
        await conn.execute("DELETE FROM tariff_prices WHERE register = 't2'")
        with pytest.raises(BillingError, match="not a rollover"):
            await bill_account(conn, account, T0, T1)
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 0
    finally:
        await conn.close()


async def test_a_modbus_float_register_never_rolls_over(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        account = await _setup(conn, "prepaid", {"energy_import_t1_kwh": (999990.5, 4.5)})
        await conn.execute("DELETE FROM tariff_prices WHERE register = 't2'")
        await conn.execute("UPDATE meters SET protocol = 'modbus', unit_id = 1")
        with pytest.raises(BillingError, match="no wrap width"):
            await bill_account(conn, account, T0, T1)
    finally:
        await conn.close()
