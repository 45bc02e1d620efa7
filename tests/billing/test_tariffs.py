"""``headend tariffs`` (flat, time of use by time of day and season, tiered monthly blocks) and billing
with them on PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import pytest

from headend.billing.charging import bill_account
from headend.store.maintenance import ensure_partitions
from tests.billing.helpers import add_reading, assign_from_start
from tests.billing.test_cli import headend
from tests.support.operators import add_operators

CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 7, 1, 0, 0, tzinfo=CST)


async def _account(conn: asyncpg.Connection, tariff: str) -> tuple[int, int]:
    channel = await conn.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ($1, 'tcp', '127.0.0.1:1') RETURNING id", tariff
    )
    account = await conn.fetchval(
        "INSERT INTO accounts (number, kind, tariff_id) SELECT $1, 'prepaid', id FROM tariffs WHERE name = $1"
        " RETURNING id",
        tariff,
    )
    meter = await conn.fetchval(
        "INSERT INTO meters (protocol, address, model, channel_id)"
        " VALUES ('dlt645-2007', $1, 'm', $2) RETURNING id",
        tariff,
        channel,
    )
    await assign_from_start(conn, meter, account)
    return account, meter


@pytest.mark.long(seconds=25)
async def test_tariffs_from_the_cli_and_billing_with_them(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await add_operators(conn, o3001="admin", o3002="cashier")
    finally:
        await conn.close()
    added = [
        headend(
            pg_dsn, "tariffs", "add", "--operator", "3001", "flat", "--kind", "flat", "--price", "total=0.56"
        ),
        headend(
            pg_dsn,
            "tariffs",
            "add",
            "--operator",
            "3001",
            "steps",
            "--kind",
            "tiered",
            "--block",
            "200=0.5",
            "--block",
            "400=0.55",
            "--block",
            "*=0.8",
        ),
        headend(
            pg_dsn,
            "tariffs",
            "add",
            "--operator",
            "3001",
            "tou",
            "--kind",
            "tou",
            "--slot",
            "06-01..09-30:08:00-22:00=0.7",
            "--slot",
            "08:00-22:00=0.6",
            "--slot",
            "22:00-08:00=0.3",
        ),
        headend(
            pg_dsn,
            "tariffs",
            "add",
            "--operator",
            "3001",
            "meter-tou",
            "--kind",
            "tou",
            "--price",
            "t1=1.0",
            "--price",
            "t2=0.4",
        ),
    ]
    assert [r.returncode for r in added] == [0, 0, 0, 0], [r.stderr for r in added]
    refused = [
        headend(
            pg_dsn, "tariffs", "add", "--operator", "3001", "flat", "--kind", "flat", "--price", "total=0.56"
        ),
        headend(
            pg_dsn, "tariffs", "add", "--operator", "3001", "x", "--kind", "tiered", "--block", "200=0.5"
        ),
        headend(pg_dsn, "tariffs", "add", "--operator", "3001", "y", "--kind", "tou", "--slot", "8-22=cheap"),
        headend(pg_dsn, "tariffs", "add", "--operator", "3001", "z", "--kind", "flat", "--price", "t9=1"),
    ]
    assert [r.returncode for r in refused] == [1, 1, 1, 1]
    cashier = headend(
        pg_dsn, "tariffs", "add", "--operator", "3002", "cheap", "--kind", "flat", "--price", "total=0.01"
    )
    assert cashier.returncode == 1 and "admin" in cashier.stderr and "Traceback" not in cashier.stderr
    assert "exists already" in refused[0].stderr and "*=PRICE" in refused[1].stderr
    assert "HH:MM-HH:MM=PRICE" in refused[2].stderr and all("Traceback" not in r.stderr for r in refused)
    names = [json.loads(line)["name"] for line in headend(pg_dsn, "tariffs", "list").stdout.splitlines()]
    assert names == ["flat", "meter-tou", "steps", "tou"]
    steps = json.loads(headend(pg_dsn, "tariffs", "show", "steps").stdout)
    assert steps["kind"] == "tiered" and [b["upto"] for b in steps["definition"]["blocks"]] == [
        "200",
        "400",
        None,
    ]

    conn = await asyncpg.connect(pg_dsn)
    try:
        await ensure_partitions(conn, T0 - timedelta(days=1), T0 + timedelta(days=3))
        tiered, meter = await _account(conn, "steps")
        for hours, value in ((0, 1000.0), (12, 1150.0), (24, 1250.0), (36, 1450.0)):
            await add_reading(conn, meter, T0 + timedelta(hours=hours), value)
        t = [T0 + timedelta(hours=h) for h in (0, 12, 24, 36)]
        assert await bill_account(conn, tiered, t[0], t[1]) == Decimal("75.00")  # 150 x 0.50
        assert await bill_account(conn, tiered, t[1], t[2]) == Decimal("52.50")  # 50 x 0.50 + 50 x 0.55
        assert await bill_account(conn, tiered, t[2], t[3]) == Decimal(
            "122.50"
        )  # 250 -> 450: 150 x 0.55 + 50 x 0.80

        tou, meter = await _account(conn, "tou")
        # summer: 10 kWh in the interval ending 09:00 (peak 0.70), 10 kWh ending 23:00 (night 0.30)
        for stamp, value in (
            (T0 + timedelta(hours=8), 0.0),
            (T0 + timedelta(hours=9), 10.0),
            (T0 + timedelta(hours=22), 10.0),
            (T0 + timedelta(hours=23), 20.0),
        ):
            await add_reading(conn, meter, stamp, value)
        assert await bill_account(conn, tou, T0 + timedelta(hours=8), T0 + timedelta(hours=23)) == Decimal(
            "10.00"
        )
    finally:
        await conn.close()
