"""Payments on a real PostgreSQL: idempotent on the reference, CSV import all-or-nothing."""

from decimal import Decimal

import asyncpg
import pytest

from headend.billing.payments import PaymentError, import_csv, parse_amount, record_payment


async def _db(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await conn.execute("INSERT INTO accounts (number, kind) VALUES ('A1', 'prepaid'), ('A2', 'postpaid')")
    return conn


async def test_payment_is_idempotent_on_reference(pg_dsn: str) -> None:
    conn = await _db(pg_dsn)
    try:
        first = await record_payment(conn, "A1", Decimal("12.30"), "R1", operator="op1")
        again = await record_payment(conn, "A1", Decimal("12.30"), "R1", operator="op1")
        assert first.recorded and not again.recorded and again.balance == Decimal("12.30")
        assert await conn.fetchval("SELECT count(*) FROM ledger") == 1
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'payment.recorded'") == 1
        with pytest.raises(PaymentError, match="unknown account"):
            await record_payment(conn, "NOPE", Decimal("1"), "R2", operator="op1")
    finally:
        await conn.close()


async def test_csv_import_checks_every_row_first(pg_dsn: str) -> None:
    conn = await _db(pg_dsn)
    try:
        with pytest.raises(PaymentError, match="line 3"):
            await import_csv(
                conn,
                "account,amount,reference\nA1,5.00,F1\nA2,1.234,F2\n",
                operator="op1",
                source="import:f.csv",
            )
        assert await conn.fetchval("SELECT count(*) FROM payments") == 0
        done = await import_csv(
            conn,
            "account,amount,reference\nA1,5.00,F1\nA2,7.5,F2\nA1,5.00,F1\n",
            operator="op1",
            source="import:f.csv",
        )
        assert [o.recorded for o in done] == [True, True, False]
        assert await conn.fetchval("SELECT sum(amount) FROM payments") == Decimal("12.50")
    finally:
        await conn.close()


def test_amount_parsing_never_uses_float() -> None:
    assert parse_amount(" 0.10 ") == Decimal("0.10")
    for bad in ("abc", "-1", "0", "NaN", "1.001", "1.5e400", "1e12"):
        with pytest.raises(PaymentError):
            parse_amount(bad)


async def test_postpaid_payment_settles_bills_oldest_first_and_clears_arrears(pg_dsn: str) -> None:
    from datetime import UTC, datetime, timedelta

    from headend.control.automation import run_once
    from headend.control.safety import SafetySettings

    conn = await _db(pg_dsn)
    now = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
    try:
        acc = await conn.fetchval("SELECT id FROM accounts WHERE number = 'A2'")
        for month, amount in ((8, "30.00"), (9, "50.00"), (10, "20.00")):  # bills as billing issues them
            start = datetime(2026, month, 1, tzinfo=UTC)
            await conn.execute(
                "INSERT INTO bills (account_id, period_start, period_end, consumption, amount, due_at)"
                " VALUES ($1, $2, $3, 1, $4::numeric, $5)",
                acc,
                start,
                start + timedelta(days=30),
                amount,
                start + timedelta(days=45),
            )
            await conn.execute(
                "INSERT INTO ledger (account_id, kind, amount, idempotency_key)"
                " VALUES ($1, 'charge', $2, $3)",
                acc,
                -Decimal(amount),
                f"bill:{month}",
            )
            await conn.execute(
                "INSERT INTO balances (account_id, balance) VALUES ($1, $2) ON CONFLICT (account_id)"
                " DO UPDATE SET balance = balances.balance + EXCLUDED.balance",
                acc,
                -Decimal(amount),
            )
        assert (await run_once(conn, SafetySettings(), now)).flagged == ["A2"]
        await record_payment(conn, "A2", Decimal("60.00"), "P1", operator="cashier")  # covers August only
        paid = await conn.fetch("SELECT amount FROM bills WHERE paid_at IS NOT NULL ORDER BY period_start")
        assert [r["amount"] for r in paid] == [Decimal("30.00")]
        assert (await run_once(conn, SafetySettings(), now)).cleared == []  # September is still overdue
        await record_payment(conn, "A2", Decimal("40.00"), "P2", operator="cashier")  # 30 left + 40 = 70
        unpaid = await conn.fetch("SELECT amount FROM bills WHERE paid_at IS NULL")
        assert [r["amount"] for r in unpaid] == []
        assert (await run_once(conn, SafetySettings(), now)).cleared == ["A2"]
        assert await conn.fetchval("SELECT arrears FROM accounts WHERE number = 'A2'") is False
        ledger = await conn.fetchval("SELECT sum(amount) FROM ledger WHERE account_id = $1", acc)
        assert ledger == await conn.fetchval("SELECT balance FROM balances WHERE account_id = $1", acc)
    finally:
        await conn.close()
