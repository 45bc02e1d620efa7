"""``headend tariffs add`` refuses time-of-use slots that leave hours without a price, and ``headend
tariffs set ... --from`` revises a tariff: billing charges each part of a period at what is in force in
it, and no revision reaches back into a period already charged."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import pytest

from headend.billing.charging import bill_account
from headend.store.maintenance import ensure_partitions
from tests.billing.helpers import add_reading
from tests.billing.test_cli import headend
from tests.billing.test_tariffs import _account
from tests.support.operators import add_operators

CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 3, 2, 0, 0, tzinfo=CST)


def _tariffs(dsn: str, *args: str) -> tuple[int, str, str]:
    done = headend(dsn, "tariffs", *args)
    return done.returncode, done.stdout, done.stderr


async def _admin(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await add_operators(conn, o4001="admin", o4002="cashier")
    finally:
        await conn.close()


async def test_time_of_use_slots_must_cover_every_hour(pg_dsn: str) -> None:
    await _admin(pg_dsn)
    code, _, err = _tariffs(
        pg_dsn, "add", "--operator", "4001", "gap", "--kind", "tou",
        "--slot", "08:00-12:00=0.6", "--slot", "14:00-08:00=0.3",
    )  # fmt: skip
    assert code == 1 and err.strip().splitlines() == [
        "error: the slots leave 12:00-14:00 without a price; add a --slot for those hours"
    ]
    code, _, err = _tariffs(
        pg_dsn, "add", "--operator", "4001", "summer", "--kind", "tou",
        "--slot", "06-01..09-30:08:00-22:00=0.7", "--slot", "22:00-08:00=0.3",
    )  # fmt: skip
    assert code == 1 and "08:00-22:00 on 10-01..05-31 without a price" in err
    code, _, err = _tariffs(
        pg_dsn, "add", "--operator", "4001", "whole", "--kind", "tou",
        "--slot", "06-01..09-30:08:00-22:00=0.7", "--slot", "08:00-22:00=0.6", "--slot", "22:00-08:00=0.3",
    )  # fmt: skip
    assert code == 0, err
    listed = [json.loads(line)["name"] for line in _tariffs(pg_dsn, "list")[1].splitlines()]
    assert listed == ["whole"]


@pytest.mark.long(seconds=25)
async def test_a_revision_prices_each_part_of_the_period_at_what_is_in_force(pg_dsn: str) -> None:
    await _admin(pg_dsn)
    add = ("add", "--operator", "4001")
    assert _tariffs(pg_dsn, *add, "flat", "--kind", "flat", "--price", "total=0.50")[0] == 0
    assert _tariffs(pg_dsn, *add, "tou", "--kind", "tou", "--slot", "00:00-00:00=0.30")[0] == 0
    assert _tariffs(pg_dsn, *add, "steps", "--kind", "tiered", "--block", "100=0.5", "--block", "*=1")[0] == 0
    middle = (T0 + timedelta(hours=12)).isoformat()
    revised = [
        _tariffs(pg_dsn, "set", "flat", "--from", middle, "--operator", "4001", "--price", "total=1.00"),
        _tariffs(pg_dsn, "set", "tou", "--from", middle, "--operator", "4001", "--slot", "00:00-00:00=0.60"),
        _tariffs(pg_dsn, "set", "steps", "--from", middle, "--operator", "4001", "--block", "*=2"),
    ]
    assert [r[0] for r in revised] == [0, 0, 0], [r[2] for r in revised]
    assert revised[0][1].strip() == f"tariff flat revised from {datetime.fromisoformat(middle).isoformat()}"
    shown = json.loads(_tariffs(pg_dsn, "show", "tou")[1])
    assert [r["definition"]["slots"] for r in shown["revisions"]] == [["00:00-00:00=0.60"]]

    conn = await asyncpg.connect(pg_dsn)
    try:
        await ensure_partitions(conn, T0 - timedelta(days=1), T0 + timedelta(days=2))
        bills = {}
        for name in ("flat", "tou", "steps"):
            account, meter = await _account(conn, name)
            for hours in range(0, 25, 6):  # 1000, +40 by 06:00, +60 by 12:00, then +100 every 6 h
                value = 1000.0 + (40.0 if hours == 6 else 0.0 if hours == 0 else 100.0 * (hours - 6) / 6)
                await add_reading(conn, meter, T0 + timedelta(hours=hours), value)
            bills[name] = await bill_account(conn, account, T0, T0 + timedelta(hours=24))
        # 100 kWh up to 12:00, 200 kWh after it
        assert bills["flat"] == Decimal("250.00")  # 100 x 0.50 + 200 x 1.00
        assert bills["tou"] == Decimal("150.00")  # 100 x 0.30 + 200 x 0.60
        assert bills["steps"] == Decimal("450.00")  # 100 x 0.50 (first block), then 200 x 2
    finally:
        await conn.close()

    # the flat account was charged up to T0 + 24 h: a revision may not reach back into that
    code, _, err = _tariffs(
        pg_dsn, "set", "flat", "--from", middle, "--operator", "4001", "--price", "total=9"
    )
    assert code == 1 and "already charged on this tariff" in err and len(err.strip().splitlines()) == 1
    later = (T0 + timedelta(days=1)).isoformat()
    refusals = [
        _tariffs(pg_dsn, "set", "flat", "--from", later, "--operator", "4002", "--price", "total=2"),
        _tariffs(pg_dsn, "set", "nope", "--from", later, "--operator", "4001", "--price", "total=2"),
        _tariffs(pg_dsn, "set", "flat", "--from", later, "--operator", "4001", "--price", "t1=2"),
        _tariffs(pg_dsn, "set", "tou", "--from", later, "--operator", "4001", "--slot", "08:00-20:00=1"),
        _tariffs(pg_dsn, "set", "tou", "--from", "tomorrow", "--operator", "4001", "--slot", "00:00-00:00=1"),
    ]
    assert [r[0] for r in refusals] == [1] * 5
    assert "admin" in refusals[0][2] and "unknown tariff 'nope'" in refusals[1][2]
    assert (
        "takes exactly --price total=PRICE" in refusals[2][2]
        and "20:00-08:00 without a price" in refusals[3][2]
    )
    assert "expected an ISO 8601 time" in refusals[4][2]
    assert all(len(r[2].strip().splitlines()) == 1 and "Traceback" not in r[2] for r in refusals)
    prices = json.loads(_tariffs(pg_dsn, "show", "flat")[1])["prices"]
    assert [p["price"] for p in prices] == ["0.500000", "1.000000"]
