"""``headend billing`` and ``headend commands`` as real processes against PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from tests.billing.helpers import assign_from_start
from tests.support import cli
from tests.support.operators import PASSWORD, add_operators, operator_env


def headend(dsn: str, *args: str, password: str = PASSWORD) -> cli.CliResult:
    return cli.headend(*args, "--dsn", dsn, env=operator_env(password))


async def test_pay_import_status_and_second_operator_approval(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o1="cashier,approver", o2="cashier,approver", o3="operator")
        await conn.execute("INSERT INTO accounts (number, kind) VALUES ('A1', 'prepaid')")
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        meter = await conn.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id, has_relay) "
            "VALUES ('dlt645-2007', '000000000001', 'm', $1, true) RETURNING id",
            channel,
        )
        command = await conn.fetchval(
            "INSERT INTO commands (meter_id, action, cause, operator, requires_approval, expires_at) "
            "VALUES ($1, 'disconnect', 'bulk', '1', true, now() + interval '1 day') RETURNING id",
            meter,
        )
    finally:
        await conn.close()
    for nobody in ("", "  ", "op1", "System"):
        refused = headend(pg_dsn, "billing", "pay", "A1", "10.50", "--ref", "R1", "--operator", nobody)
        assert (
            refused.returncode == 1 and "operator id" in refused.stderr and "Traceback" not in refused.stderr
        )
    wrong = headend(
        pg_dsn, "billing", "pay", "A1", "10.50", "--ref", "R1", "--operator", "1", password="guess"
    )
    assert wrong.returncode == 1 and "operator 1: unknown, disabled or wrong password" in wrong.stderr
    no_role = headend(pg_dsn, "billing", "pay", "A1", "10.50", "--ref", "R1", "--operator", "3")
    assert no_role.returncode == 1 and "does not hold the cashier role" in no_role.stderr
    first = headend(pg_dsn, "billing", "pay", "A1", "10.50", "--ref", "R1", "--operator", "1")
    again = headend(pg_dsn, "billing", "pay", "A1", "10.50", "--ref", "R1", "--operator", "1")
    assert "recorded; balance 10.50" in first.stdout and "already recorded" in again.stdout
    bad = headend(pg_dsn, "billing", "pay", "A1", "1.5e400", "--ref", "R2", "--operator", "1")
    assert bad.returncode == 1 and "error:" in bad.stderr and "Traceback" not in bad.stderr
    csv_file = tmp_path / "pay.csv"
    csv_file.write_text("account,amount,reference\nA1,4.50,F1\nA1,10.50,R1\n", encoding="utf-8")
    imported = headend(pg_dsn, "billing", "import", str(csv_file), "--operator", "2")
    assert "1 recorded, 1 duplicates" in imported.stdout
    status = json.loads(headend(pg_dsn, "billing", "status", "A1").stdout)
    assert status["balance"] == "15.00" and status["arrears"] is False
    same = headend(pg_dsn, "commands", "approve", str(command), "--operator", "1")
    assert same.returncode == 1 and "must differ" in same.stderr
    other = headend(pg_dsn, "commands", "approve", str(command), "--operator", "2")
    assert other.returncode == 0, other.stderr
    shown = json.loads(headend(pg_dsn, "commands", "show", str(command)).stdout)
    assert shown["approved_by"] == "2"
    assert [a["actor"] for a in shown["audit"] if a["action"] == "command.approved"] == ["2"]
    payer = await asyncpg.connect(pg_dsn)
    try:
        assert await payer.fetchval("SELECT operator FROM payments WHERE reference = 'R1'") == "1"
        assert await payer.fetchval("SELECT actor FROM audit_log WHERE reason = 'F1'") == "2"
    finally:
        await payer.close()


async def test_bill_reports_accounts_it_cannot_bill(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o61="cashier")
        tariff = await conn.fetchval("INSERT INTO tariffs (name, kind) VALUES ('f', 'flat') RETURNING id")
        await conn.execute("INSERT INTO tariff_prices VALUES ($1, 'total', 1.0, '2026-01-01')", tariff)
        account = await conn.fetchval(
            "INSERT INTO accounts (number, kind, tariff_id) VALUES ('B', 'prepaid', $1) RETURNING id", tariff
        )
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        meter = await conn.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id) "
            "VALUES ('dlt645-2007', '2', 'm', $1) RETURNING id",
            channel,
        )
        await assign_from_start(conn, meter, account)
    finally:
        await conn.close()
    done = headend(
        pg_dsn, "billing", "bill", "--from", "2026-11-01", "--to", "2026-11-08", "--operator", "61"
    )
    assert done.returncode == 1 and "B: not billed: meter" in done.stderr


async def test_meter_replacement_is_recorded_with_precise_refusals(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o51="admin")
        account = await conn.fetchval(
            "INSERT INTO accounts (number, kind) VALUES ('R1', 'prepaid') RETURNING id"
        )
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        for address, owner in (("000000000011", account), ("000000000012", None)):
            meter = await conn.fetchval(
                "INSERT INTO meters (protocol, address, model, channel_id) "
                "VALUES ('dlt645-2007', $1, 'm', $2) RETURNING id",
                address,
                channel,
            )
            await assign_from_start(conn, meter, owner)
        args = ["billing", "replace", "000000000011", "000000000012", "--operator", "51"]
        naive = headend(
            pg_dsn,
            *args,
            "--at",
            "2026-11-20T10:30:00",
            "--final",
            "energy_import_kwh=520.4",
            "--initial",
            "energy_import_kwh=0.1",
        )
        assert naive.returncode == 1 and "needs a UTC offset" in naive.stderr
        garbled = headend(
            pg_dsn,
            *args,
            "--at",
            "2026-11-20T10:30:00+08:00",
            "--final",
            "energy_import_kwh",
            "--initial",
            "energy_import_kwh=0.1",
        )
        assert garbled.returncode == 1 and "expected QUANTITY=KWH" in garbled.stderr
        done = headend(
            pg_dsn,
            *args,
            "--at",
            "2026-11-20T10:30:00+08:00",
            "--final",
            "energy_import_kwh=520.4",
            "--initial",
            "energy_import_kwh=0.1",
        )
        assert done.returncode == 0, done.stderr
        moved = await conn.fetchval(
            "SELECT m.address FROM meters m JOIN meter_assignments x ON x.meter_id = m.id"
            " WHERE x.account_id = $1 AND x.effective_to IS NULL",
            account,
        )
        assert moved == "000000000012"
        row = await conn.fetchrow("SELECT final_kwh::text, replaced_at FROM meter_replacements")
        assert row["final_kwh"] == '{"energy_import_kwh": "520.4"}'
        assert row["replaced_at"].isoformat() == "2026-11-20T02:30:00+00:00"
    finally:
        await conn.close()
