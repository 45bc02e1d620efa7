"""``headend accounts`` and ``headend billing adjust|holds|resolve|bill`` as real processes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg

from headend.store.maintenance import ensure_partitions
from tests.billing.helpers import add_reading, assign_from_start
from tests.billing.test_cli import headend
from tests.support.operators import add_operators

T0 = datetime(2026, 11, 2, tzinfo=UTC)


async def test_accounts_assignments_and_adjustments_from_the_cli(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o2001="admin", o2002="cashier")
        await conn.execute("INSERT INTO tariffs (name, kind) VALUES ('res', 'flat')")
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        await conn.execute(
            "INSERT INTO meters (name, protocol, address, model, channel_id)"
            " VALUES ('m1', 'dlt645-2007', '1', 'm', $1)",
            channel,
        )
    finally:
        await conn.close()
    ok = headend(
        pg_dsn, "accounts", "add", "A-1", "--kind", "prepaid", "--tariff", "res", "--operator", "2001"
    )
    assert ok.returncode == 0, ok.stderr
    dup = headend(pg_dsn, "accounts", "add", "A-1", "--kind", "prepaid", "--operator", "2001")
    assert dup.returncode == 1 and dup.stderr.strip() == "error: account 'A-1' exists already"
    bad = headend(pg_dsn, "accounts", "add", "A-2", "--kind", "weekly", "--operator", "2001")
    assert bad.returncode == 1 and "prepaid or postpaid" in bad.stderr and "Traceback" not in bad.stderr
    assert (
        headend(pg_dsn, "accounts", "add", "A-2", "--kind", "postpaid", "--operator", "2001").returncode == 0
    )
    changed = headend(
        pg_dsn,
        "accounts",
        "set",
        "A-1",
        "reconnect_mode=close_allowed",
        "protected=true",
        "--operator",
        "2001",
    )
    assert changed.returncode == 0, changed.stderr
    wrong = headend(pg_dsn, "accounts", "set", "A-1", "reconnect_mode=wiggle", "--operator", "2001")
    assert wrong.returncode == 1 and "close or close_allowed" in wrong.stderr
    first = headend(
        pg_dsn,
        "accounts",
        "assign",
        "m1",
        "A-1",
        "--from",
        "2026-11-01T00:00:00+08:00",
        "--reason",
        "move in",
        "--operator",
        "2001",
    )
    second = headend(
        pg_dsn,
        "accounts",
        "assign",
        "m1",
        "A-2",
        "--from",
        "2026-11-10T00:00:00+08:00",
        "--reason",
        "tenant change",
        "--operator",
        "2001",
    )
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    shown = json.loads(headend(pg_dsn, "accounts", "show", "A-1").stdout)
    assert shown["reconnect_mode"] == "close_allowed" and shown["protected"] is True
    assert [a["effective_to"] for a in shown["assignments"]] == ["2026-11-09 16:00:00+00:00"]
    listed = [json.loads(line)["number"] for line in headend(pg_dsn, "accounts", "list").stdout.splitlines()]
    assert listed == ["A-1", "A-2"]

    refund = headend(
        pg_dsn,
        "billing",
        "adjust",
        "A-1",
        "12.50",
        "--ref",
        "ADJ-1",
        "--reason",
        "meter fault refund",
        "--operator",
        "2002",
    )
    again = headend(
        pg_dsn,
        "billing",
        "adjust",
        "A-1",
        "12.50",
        "--ref",
        "ADJ-1",
        "--reason",
        "meter fault refund",
        "--operator",
        "2002",
    )
    assert "recorded; balance 12.50" in refund.stdout and "already recorded; balance 12.50" in again.stdout
    debit = headend(
        pg_dsn, "billing", "adjust", "A-1", "-2.5", "--ref", "ADJ-2", "--reason", "fee", "--operator", "2002"
    )
    assert "balance 10.00" in debit.stdout
    reused = headend(
        pg_dsn, "billing", "adjust", "A-1", "-25", "--ref", "ADJ-1", "--reason", "typo", "--operator", "2002"
    )
    assert reused.returncode == 1 and "already recorded as 12.50" in reused.stderr
    zero = headend(
        pg_dsn, "billing", "adjust", "A-1", "0", "--ref", "ADJ-3", "--reason", "x", "--operator", "2002"
    )
    assert zero.returncode == 1 and "non-zero" in zero.stderr
    not_cashier = headend(
        pg_dsn, "billing", "adjust", "A-1", "99", "--ref", "ADJ-4", "--reason", "x", "--operator", "2001"
    )  # an admin is not a cashier: adjustments are money
    assert (
        not_cashier.returncode == 1
        and "cashier" in not_cashier.stderr
        and "Traceback" not in not_cashier.stderr
    )
    not_admin = headend(pg_dsn, "accounts", "set", "A-1", "credit_limit=1000", "--operator", "2002")
    assert not_admin.returncode == 1 and "admin" in not_admin.stderr
    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT details->>'reason' AS reason, details->>'operator' AS op FROM ledger LIMIT 1"
        )
        assert tuple(row) == ("meter fault refund", "2002")
        assert await conn.fetchval("SELECT sum(amount) FROM ledger") == Decimal("10.00")
    finally:
        await conn.close()


async def test_bill_uses_configured_due_days_and_holds_are_listed_and_resolved(
    pg_dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o2003="admin", o2004="cashier")
        await ensure_partitions(conn, T0, T0 + timedelta(days=2))
        tariff = await conn.fetchval("INSERT INTO tariffs (name, kind) VALUES ('res', 'flat') RETURNING id")
        await conn.execute(
            "INSERT INTO tariff_prices (tariff_id, register, price, effective_from)"
            " VALUES ($1, 'total', 1, $2)",
            tariff,
            T0 - timedelta(days=30),
        )
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        ids = []
        for number in ("POST", "SWAP"):
            account = await conn.fetchval(
                "INSERT INTO accounts (number, kind, tariff_id) VALUES ($1, 'postpaid', $2) RETURNING id",
                number,
                tariff,
            )
            ids.append(
                await conn.fetchval(
                    "INSERT INTO meters (name, protocol, address, model, channel_id)"
                    " VALUES ($1, 'dlt645-2007', $1, 'm', $2) RETURNING id",
                    number.lower(),
                    channel,
                )
            )
            await assign_from_start(conn, ids[-1], account)
        for meter, values in zip(ids, ((10.0, 15.0), (500.0, 20.0)), strict=True):
            await add_reading(conn, meter, T0, values[0])
            await add_reading(conn, meter, T0 + timedelta(days=1), values[1])
    finally:
        await conn.close()
    config = tmp_path / "headend.toml"
    config.write_text("[billing]\ndue_days = 9\n")
    period = ("--from", T0.isoformat(), "--to", (T0 + timedelta(days=1)).isoformat())
    billed = headend(pg_dsn, "billing", "bill", *period, "--config", str(config), "--operator", "2004")
    assert billed.returncode == 1 and "POST: 5.00" in billed.stdout
    assert "SWAP: not billed: held" in billed.stderr
    holds = headend(pg_dsn, "billing", "holds")
    hold = json.loads(holds.stdout)
    assert hold["meter"] == "swap" and "500.0 -> 20.0" in hold["reason"]
    refused = headend(
        pg_dsn, "billing", "resolve", str(hold["id"]), "accepted", "--reason", "ok", "--operator", "2003"
    )
    assert refused.returncode == 1 and "not consumption" in refused.stderr
    cashier = headend(
        pg_dsn, "billing", "resolve", str(hold["id"]), "accepted", "--reason", "ok", "--operator", "2004"
    )
    assert cashier.returncode == 1 and "admin" in cashier.stderr and "Traceback" not in cashier.stderr
    nan = headend(
        pg_dsn,
        "billing",
        "resolve",
        str(hold["id"]),
        "replaced",
        "--final",
        "nan",
        "--reason",
        "x",
        "--operator",
        "2003",
    )
    assert nan.returncode == 1 and nan.stderr.startswith("error: --final must be a finite number")
    done = headend(
        pg_dsn,
        "billing",
        "resolve",
        str(hold["id"]),
        "replaced",
        "--final",
        "503",
        "--initial",
        "0",
        "--reason",
        "swapped on site",
        "--operator",
        "2003",
    )
    assert done.returncode == 0, done.stderr
    assert headend(pg_dsn, "billing", "holds").stdout.strip() == "no holds"
    rebilled = headend(pg_dsn, "billing", "bill", *period, "--config", str(config), "--operator", "2004")
    assert "SWAP: 23.00" in rebilled.stdout  # (503 - 500) + (20 - 0)
    conn = await asyncpg.connect(pg_dsn)
    try:
        due = await conn.fetch("SELECT due_at FROM bills")
        assert {r["due_at"] for r in due} == {T0 + timedelta(days=10)}  # --to + 9 days from the config
    finally:
        await conn.close()
