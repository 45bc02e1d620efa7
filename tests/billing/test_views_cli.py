"""Seeing the data without SQL: ``meters show``, ``readings`` (table, CSV, JSON; per interval and per
day), ``accounts statement`` and ``channels show`` as real processes against PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg

from headend.billing.charging import bill_account
from headend.store.maintenance import ensure_partitions
from tests.billing.helpers import add_reading, assign_from_start
from tests.billing.test_cli import headend
from tests.support.operators import add_operators

CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 3, 2, 0, 0, tzinfo=CST)


async def _fleet(dsn: str) -> tuple[int, int]:
    """Channel ``bus-a`` with the meter ``bus-a/000000000001`` on account A7 (flat 0.50): readings every
    15 minutes for two days (+1 kWh each, one missing), a clock event and one read cycle."""
    conn = await asyncpg.connect(dsn)
    try:
        await ensure_partitions(conn, T0 - timedelta(days=2), T0 + timedelta(days=3))
        await add_operators(conn, o5001="cashier")
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address, settings) VALUES"
            " ('bus-a', 'tcp', '127.0.0.1:1', '{\"url\": \"tcp://127.0.0.1:1\"}') RETURNING id"
        )
        tariff = await conn.fetchval("INSERT INTO tariffs (name, kind) VALUES ('flat', 'flat') RETURNING id")
        await conn.execute("INSERT INTO tariff_prices VALUES ($1, 'total', 0.5, '2020-01-01')", tariff)
        account = await conn.fetchval(
            "INSERT INTO accounts (number, name, kind, tariff_id) VALUES ('A7', 'Shop 7', 'prepaid', $1)"
            " RETURNING id",
            tariff,
        )
        meter = await conn.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id, has_relay)"
            " VALUES ('dlt645-2007', '000000000001', 'dlt645-generic', $1, true) RETURNING id",
            channel,
        )
        await assign_from_start(conn, meter, account)
        for n in range(2 * 96 + 1):
            if n != 5:
                await add_reading(conn, meter, T0 + timedelta(minutes=15 * n), 100.0 + n)
        await conn.execute(
            "INSERT INTO events (category, kind, meter_id, channel_id, occurred_at, details)"
            " VALUES ('comm', 'clock_corrected', $1, $2, $3, '{\"drift_s\": 95.0}')",
            meter,
            channel,
            T0 + timedelta(hours=1),
        )
        await conn.execute(
            "INSERT INTO read_cycles (channel_id, cycle_at, due, succeeded, readings, started_at,"
            " finished_at, utilisation) VALUES ($1, $2, 4, 3, 12, $2, $2, 0.25)",
            channel,
            T0,
        )
        await bill_account(conn, account, T0, T0 + timedelta(days=1))  # 96 kWh x 0.50 = 48.00
        return meter, account
    finally:
        await conn.close()


async def test_readings_per_interval_and_per_day_in_every_format(pg_dsn: str) -> None:
    await _fleet(pg_dsn)
    name, span = "bus-a/000000000001", ("--from", "2026-03-02", "--to", "2026-03-02T02:00:00+08:00")
    table = headend(pg_dsn, "readings", name, *span)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ts", "value", "consumption", "quality"] and len(lines) == 1 + 7
    assert lines[1].split() == ["2026-03-02T00:00:00+08:00", "100", "-", "actual"]
    assert lines[5].split() == ["2026-03-02T01:00:00+08:00", "104", "1", "actual"]
    assert lines[6].split() == ["2026-03-02T01:30:00+08:00", "106", "2", "actual"]  # 01:15 is not stored
    rows = list(
        csv.DictReader(io.StringIO(headend(pg_dsn, "readings", name, *span, "--format", "csv").stdout))
    )
    assert [r["value"] for r in rows] == ["100", "101", "102", "103", "104", "106", "107"]
    daily = headend(
        pg_dsn, "readings", name, "--from", "2026-03-02", "--to", "2026-03-04", "--interval", "1d",
        "--format", "json",
    )  # fmt: skip
    assert daily.returncode == 0, daily.stderr
    days = json.loads(daily.stdout)
    assert [(d["day"], d["value"], d["consumption"], d["quality"]) for d in days] == [
        ("2026-03-02", 195.0, None, "actual"),
        ("2026-03-03", 291.0, 96.0, "actual"),
    ]
    refused = [
        headend(pg_dsn, "readings", name, "--from", "2026-03-04", "--to", "2026-03-02"),
        headend(pg_dsn, "readings", "nope", *span),
        headend(pg_dsn, "readings", name, *span, "--interval", "5m"),
    ]
    assert [r.returncode for r in refused] == [1, 1, 2]
    assert refused[0].stderr.strip() == "error: --to '2026-03-02' is not after --from '2026-03-04'"
    assert refused[1].stderr.strip() == "error: no meter named or addressed 'nope'"


async def test_meter_channel_and_account_views(pg_dsn: str) -> None:
    await _fleet(pg_dsn)
    paid = headend(pg_dsn, "billing", "pay", "A7", "20", "--ref", "r-1", "--operator", "5001")
    assert paid.returncode == 0, paid.stderr
    meter = json.loads(headend(pg_dsn, "meters", "show", "bus-a/000000000001", "--json").stdout)
    assert (meter["channel"], meter["account"], meter["relay"], meter["clock_offset_s"]) == (
        "bus-a",
        "A7",
        "unknown (no confirmed command)",
        95.0,
    )
    assert datetime.fromisoformat(meter["last_read"]) == T0 + timedelta(days=2)
    assert [(r["quantity"], r["value"], r["quality"]) for r in meter["latest"]] == [
        ("energy_import_kwh", 292.0, "actual")
    ]
    assert [e["kind"] for e in meter["events"]] == ["clock_corrected"]
    text = headend(pg_dsn, "meters", "show", "bus-a/000000000001").stdout
    assert "account:" in text and "A7" in text and "clock offset s:" in text

    channel = json.loads(headend(pg_dsn, "channels", "show", "bus-a", "--json").stdout)
    assert (channel["url"], channel["meters"]) == ("tcp://127.0.0.1:1", 1)
    assert [(c["due"], c["succeeded"], c["utilisation"]) for c in channel["cycles"]] == [(4, 3, 0.25)]
    shown = headend(pg_dsn, "channels", "show", "bus-a").stdout
    assert "success (last 1 cycles): 3/4" in " ".join(shown.split()) and "bus-a/000000000001" in shown
    assert headend(pg_dsn, "channels", "show", "nope").stderr.strip() == "error: unknown channel 'nope'"

    statement = json.loads(
        headend(
            pg_dsn, "accounts", "statement", "A7", "--from", "2026-03-01", "--to", "2030-01-01", "--json"
        ).stdout
    )
    assert Decimal(statement["opening"]) == 0 and Decimal(statement["closing"]) == Decimal("-28.00")
    assert [(e["kind"], Decimal(e["amount"]), Decimal(e["balance"])) for e in statement["entries"]] == [
        ("charge", Decimal("-48.00"), Decimal("-48.00")),
        ("payment", Decimal("20.00"), Decimal("-28.00")),
    ]
    later = json.loads(
        headend(
            pg_dsn, "accounts", "statement", "A7", "--from", "2026-03-04", "--to", "2030-01-01", "--json"
        ).stdout
    )
    assert Decimal(later["opening"]) == Decimal("-48.00") and len(later["entries"]) == 1
    printed = headend(
        pg_dsn, "accounts", "statement", "A7", "--from", "2026-03-01", "--to", "2030-01-01"
    ).stdout
    assert "closing balance: -28.00" in " ".join(printed.split())
    missing = headend(pg_dsn, "accounts", "statement", "B9", "--from", "2026-03-01", "--to", "2026-04-01")
    assert missing.returncode == 1 and missing.stderr.strip() == "error: unknown account 'B9'"


OFFSET_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[+-]\d\d:\d\d)?")


async def test_times_carry_their_offset_and_money_two_decimals_across_commands(pg_dsn: str) -> None:
    """One way to print a time (ISO 8601 to the second with its offset) and an amount (two decimals)
    in billing bill / pay, tariffs set, accounts assign and statement, and db status."""
    await _fleet(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o5002="admin")
    finally:
        await conn.close()
    day2 = ("--from", "2026-03-03T00:00:00+08:00", "--to", "2026-03-04T00:00:00+08:00")
    billed = headend(pg_dsn, "billing", "bill", *day2, "--operator", "5001")
    assert billed.returncode == 0, billed.stderr
    assert billed.stdout.splitlines() == ["A7: 48.00"]  # 96 kWh x 0.5, not 48.000
    paid = headend(pg_dsn, "billing", "pay", "A7", "20.5", "--ref", "r-2", "--operator", "5001")
    assert paid.stdout.strip() == "A7: payment r-2 recorded; balance -75.50", paid.stderr
    revised = headend(
        pg_dsn, "tariffs", "set", "flat", "--from", "2026-03-05T00:00:00.000+08:00", "--price", "total=0.55",
        "--operator", "5002",
    )  # fmt: skip
    assert revised.stdout.strip() == "tariff flat revised from 2026-03-05T00:00:00+08:00", revised.stderr
    assigned = headend(
        pg_dsn, "accounts", "assign", "bus-a/000000000001", "A7", "--from", "2026-03-06T00:00:00+08:00",
        "--reason", "re-signed", "--operator", "5002",
    )  # fmt: skip
    assert assigned.stdout.strip().endswith("from 2026-03-06T00:00:00+08:00"), assigned.stderr

    printed = headend(pg_dsn, "accounts", "statement", "A7", "--from", "2026-03-01", "--to", "2030-01-01")
    lines = printed.stdout.splitlines()
    ledger = lines[lines.index("ledger:") + 2 : lines.index("ledger:") + 5]
    assert [line.split()[1:4] for line in ledger] == [
        ["charge", "-48.00", "-48.00"],
        ["charge", "-48.00", "-96.00"],
        ["payment", "20.50", "-75.50"],
    ]
    for line in ledger:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", line.split()[0]), line
    assert "closing balance: -75.50" in " ".join(printed.stdout.split())

    status = headend(pg_dsn, "db", "status")
    applied = [m for line in status.stdout.splitlines() if "_" in line for m in OFFSET_TIME.findall(line)]
    assert applied and all(re.search(r"[+-]\d\d:\d\d$", m) for m in applied), status.stdout
