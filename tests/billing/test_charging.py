"""Billing from stored readings on PostgreSQL: TOU with rollover and multiplier, prepaid and postpaid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from headend.billing.charging import BillingError, bill_account

T0 = datetime(2026, 11, 1, tzinfo=UTC)
T1 = T0 + timedelta(days=7)


async def _setup(conn: asyncpg.Connection, kind: str, registers: dict[str, tuple[float, float]]) -> int:
    await conn.execute("SELECT headend_ensure_partitions_between($1, $2)", T0 - timedelta(days=1), T1)
    tariff = await conn.fetchval("INSERT INTO tariffs (name, kind) VALUES ('tou', 'tou') RETURNING id")
    await conn.execute(
        "INSERT INTO tariff_prices (tariff_id, register, price, effective_from) VALUES "
        "($1, 't1', 1.00, $2), ($1, 't2', 0.50, $2), ($1, 't1', 9.99, $3)", tariff, T0 - timedelta(days=30),
        T1 + timedelta(days=1))
    account = await conn.fetchval(
        "INSERT INTO accounts (number, kind, tariff_id) VALUES ('A', $1, $2) RETURNING id", kind, tariff)
    channel = await conn.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id")
    meter = await conn.fetchval(
        "INSERT INTO meters (protocol, address, model, channel_id, account_id, multiplier) "
        "VALUES ('dlt645-2007', '1', 'm', $1, $2, 2) RETURNING id", channel, account)
    source = await conn.fetchval("INSERT INTO reading_sources (name) VALUES ('test') RETURNING id")
    for name, (before, after) in registers.items():
        quantity = await conn.fetchval(
            "INSERT INTO quantities (name) VALUES ($1) "
            "ON CONFLICT (name) DO UPDATE SET name = $1 RETURNING id", name)
        await conn.executemany(
            "INSERT INTO readings (meter_id, quantity_id, ts, value, source_id) VALUES ($1, $2, $3, $4, $5)",
            [(meter, quantity, T0, before, source), (meter, quantity, T1, after, source)])
    return account


async def test_prepaid_tou_with_rollover_is_charged_once(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        account = await _setup(conn, "prepaid", {"energy_import_t1_kwh": (999990.5, 4.5),
                                                 "energy_import_t2_kwh": (100.1, 110.2)})
        # t1: 14 kWh (rollover) x2 = 28 -> 28.00; t2: 10.1 x2 = 20.2 kWh x 0.50 = 10.10
        assert await bill_account(conn, account, T0, T1) == Decimal("38.10")
        await bill_account(conn, account, T0, T1)
        assert await conn.fetchval("SELECT balance FROM balances WHERE account_id = $1", account) \
            == Decimal("-38.10")
        assert await conn.fetchval("SELECT count(*) FROM ledger WHERE kind = 'charge'") == 1
    finally:
        await conn.close()


async def test_postpaid_gets_a_bill_with_due_date(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        account = await _setup(conn, "postpaid", {"energy_import_t1_kwh": (10, 15),
                                                  "energy_import_t2_kwh": (0, 0)})
        assert await bill_account(conn, account, T0, T1, due_days=10) == Decimal("10.00")
        bill = await conn.fetchrow("SELECT amount, due_at FROM bills WHERE account_id = $1", account)
        assert bill["amount"] == Decimal("10.00") and bill["due_at"] == T1 + timedelta(days=10)
        assert await conn.fetchval("SELECT count(*) FROM balances") == 0
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
