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
