"""Scheduled prepaid billing from stored readings, as the daemon's billing service runs it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from headend.billing.service import bill_due_prepaid
from headend.config import validate_config
from headend.engine.engine import Engine
from headend.store import maintenance
from tests.billing.helpers import assign_from_start
from tests.support.engine import engine_for
from tests.support.logins import daemon_dsn
from tests.support.postgres import CountingPool
from tests.support.waiting import wait_until

T0 = datetime(2026, 11, 2, tzinfo=UTC)


async def _reading(conn: asyncpg.Connection, meter: int, ts: datetime, value: float) -> None:
    await conn.execute(
        "INSERT INTO readings (meter_id, quantity_id, ts, value, source_id) SELECT $1, q.id, $2, $3, s.id"
        " FROM quantities q, reading_sources s WHERE q.name = 'energy_import_kwh' AND s.name = 'test'",
        meter,
        ts,
        value,
    )


async def _flat_tariff_and_channel(conn: asyncpg.Connection, price: str) -> tuple[int, int]:
    """Partitions, names, a flat tariff at ``price`` and a (disabled) channel: ``(tariff, channel)``."""
    await maintenance.ensure_partitions(conn, T0, T0 + timedelta(days=1))  # a no-op on TimescaleDB
    await conn.execute("INSERT INTO quantities (name) VALUES ('energy_import_kwh') ON CONFLICT DO NOTHING")
    await conn.execute("INSERT INTO reading_sources (name) VALUES ('test')")
    tariff = await conn.fetchval("INSERT INTO tariffs (name, kind) VALUES ('flat', 'flat') RETURNING id")
    await conn.execute(
        "INSERT INTO tariff_prices (tariff_id, register, price, effective_from)"
        " VALUES ($1, 'total', $2::numeric, '2000-01-01Z')",
        tariff,
        price,
    )
    channel = await conn.fetchval(
        "INSERT INTO channels (name, kind, address, enabled)"
        " VALUES ('c', 'tcp', '127.0.0.1:1', false) RETURNING id"
    )
    return tariff, channel


async def _account_read_twice(conn: asyncpg.Connection, number: str) -> tuple[int, int]:
    """A prepaid account at 1.00 per kWh with one meter read at T0 (10.0) and 15 minutes later (14.0):
    ``(account, meter)``."""
    tariff, channel = await _flat_tariff_and_channel(conn, "1.00")
    account = await conn.fetchval(
        "INSERT INTO accounts (number, kind, tariff_id) VALUES ($1, 'prepaid', $2) RETURNING id",
        number,
        tariff,
    )
    meter = await conn.fetchval(
        "INSERT INTO meters (protocol, address, model, channel_id) VALUES "
        "('dlt645-2007', '1', 'dlt645-generic', $1) RETURNING id",
        channel,
    )
    await assign_from_start(conn, meter, account)
    await _reading(conn, meter, T0, 10.0)
    await _reading(conn, meter, T0 + timedelta(minutes=15), 14.0)
    return account, meter


def _billing_daemon(pg_dsn: str, tmp_path: Path, billing: dict[str, str]) -> Engine:
    """An engine running only the billing service with these ``[billing]`` settings (not started)."""
    config = validate_config(
        {
            "engine": {"services": ["headend.billing.service:run"]},
            "billing": billing,
            "metrics": {"port": 0},
            "backfill": {"enabled": False},
        },
        "test",
    )
    return engine_for(config, pg_dsn, tmp_path)


async def test_each_pass_bills_new_readings_once_and_defers_incomplete_accounts(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    daemon = await asyncpg.connect(daemon_dsn(pg_dsn))  # the billing pass runs as the daemon's login
    try:
        tariff, channel = await _flat_tariff_and_channel(conn, "0.60")
        meters = {}
        for number in ("P-1", "P-2"):  # P-2 has two meters, one of which has not been read yet
            account = await conn.fetchval(
                "INSERT INTO accounts (number, kind, tariff_id) VALUES ($1, 'prepaid', $2) RETURNING id",
                number,
                tariff,
            )
            for suffix in ("a", "b") if number == "P-2" else ("a",):
                meters[number + suffix] = await conn.fetchval(
                    "INSERT INTO meters (protocol, address, model, channel_id) VALUES "
                    "('dlt645-2007', $1, 'dlt645-generic', $2) RETURNING id",
                    f"{len(meters) + 1}",
                    channel,
                )
                await assign_from_start(conn, meters[number + suffix], account)
        await conn.execute("INSERT INTO accounts (number, kind) VALUES ('POST', 'postpaid')")
        await _reading(conn, meters["P-1a"], T0, 100.0)
        await _reading(conn, meters["P-1a"], T0 + timedelta(minutes=15), 102.5)
        await _reading(conn, meters["P-2a"], T0, 50.0)
        await _reading(conn, meters["P-2a"], T0 + timedelta(minutes=15), 51.0)

        first = await bill_due_prepaid(daemon)
        assert [(p.account, p.amount) for p in first] == [("P-1", Decimal("1.50"))]  # 2.5 kWh x 0.60
        assert await bill_due_prepaid(daemon) == []  # nothing new: never charged twice
        await _reading(conn, meters["P-1a"], T0 + timedelta(minutes=30), 103.5)
        second = await bill_due_prepaid(daemon)
        assert [(p.account, p.start, p.amount) for p in second] == [
            ("P-1", T0 + timedelta(minutes=15), Decimal("0.60"))
        ]
        assert await conn.fetchval(
            "SELECT balance FROM balances b JOIN accounts a ON a.id = b.account_id WHERE a.number = 'P-1'"
        ) == Decimal("-2.10")
        # P-2 is billed once its second meter has readings covering the period
        await _reading(conn, meters["P-2b"], T0, 10.0)
        await _reading(conn, meters["P-2b"], T0 + timedelta(minutes=15), 11.0)
        third = await bill_due_prepaid(daemon)
        assert [(p.account, p.amount) for p in third] == [("P-2", Decimal("1.20"))]  # (1 + 1) kWh x 0.60
    finally:
        await daemon.close()
        await conn.close()


async def test_the_daemon_runs_the_billing_service(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        account, meter = await _account_read_twice(conn, "D-1")
        engine = _billing_daemon(pg_dsn, tmp_path, {"run_every": "200ms"})

        async def balance_is(expected: str) -> bool:
            balance = await conn.fetchval("SELECT balance FROM balances WHERE account_id = $1", account)
            return balance == Decimal(expected)

        await engine.start()
        try:
            await wait_until(lambda: balance_is("-4.00"), 10, "the balance to become -4.00")
            await _reading(conn, meter, T0 + timedelta(minutes=30), 15.0)  # arrives while the daemon runs
            await wait_until(lambda: balance_is("-5.00"), 10, "the balance to become -5.00")
        finally:
            await engine.stop()
        assert await conn.fetchval("SELECT count(*) FROM ledger WHERE kind = 'charge'") == 2
    finally:
        await conn.close()


async def test_the_daemon_validates_new_readings_between_billing_passes(pg_dsn: str, tmp_path: Path) -> None:
    """A reading is validated within ``[billing] validate_every`` of being stored, not only at the next
    billing pass (an hour away here): a drop that is no rollover is suspect and holds the meter."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        _account, meter = await _account_read_twice(conn, "V-1")
        engine = _billing_daemon(pg_dsn, tmp_path, {"run_every": "1h", "validate_every": "200ms"})
        await engine.start()
        try:

            async def charged_once() -> bool:
                return await conn.fetchval("SELECT count(*) FROM ledger WHERE kind = 'charge'") == 1

            async def held() -> bool:
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM vee_holds WHERE meter_id = $1 AND resolved_at IS NULL", meter
                    )
                )

            await wait_until(charged_once, 30, "the first billing pass, at start")
            await _reading(conn, meter, T0 + timedelta(minutes=30), 3.0)  # a swapped meter?
            await wait_until(held, 30, "the suspect reading to hold the meter")
        finally:
            await engine.stop()
        quality = await conn.fetchval(
            "SELECT quality::text FROM readings WHERE meter_id = $1 AND ts = $2",
            meter,
            T0 + timedelta(minutes=30),
        )
        assert quality == "suspect"
        assert await conn.fetchval("SELECT count(*) FROM ledger WHERE kind = 'charge'") == 1  # no second pass
    finally:
        await conn.close()


async def test_billing_says_a_database_outage_once_not_once_per_pass(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unreachable database is one warning for the outage, no traceback and no failed pass."""
    from headend.billing.service import run
    from headend.config import validate_config
    from headend.metrics import EngineMetrics
    from headend.services import EngineServices

    config = validate_config({"billing": {"run_every": "100ms"}}, "test")
    unreachable = f"postgresql://postgres@/headend?host={tmp_path / 'no-server'}&port=5432"
    pool = CountingPool(await asyncpg.create_pool(unreachable, min_size=0, timeout=1))
    metrics = EngineMetrics()

    async def no_bus(meter_id: int, body: object) -> None:
        raise AssertionError("no meter can be asked without a database")

    service = asyncio.create_task(run(EngineServices(config, pool, metrics, no_bus)))  # type: ignore[arg-type]
    try:
        await wait_until(
            lambda: service.done() or any("billing waits" in r.getMessage() for r in caplog.records),
            30,
            "the outage warning",
        )
        passes = pool.acquired
        await wait_until(
            lambda: pool.acquired >= passes + 10, 30, "ten more passes against the dead database"
        )
    finally:
        service.cancel()
        await asyncio.gather(service, return_exceptions=True)
        await pool.pool.close()
    lines = [r for r in caplog.records if r.name == "headend.billing.service"]
    assert [r.getMessage() for r in lines] == ["billing waits for the database"]
    assert all(r.exc_info is None for r in lines)
    assert metrics.failed_passes.labels("billing")._value.get() == 0


@pytest.mark.parametrize("held_by", ["meter record", "assignment"])
async def test_a_meter_replaced_before_the_first_bill_is_billed_from_the_old_meters_first_reading(
    pg_dsn: str, held_by: str
) -> None:
    """The account's first period starts at the old meter's first reading, not the new meter's: the old
    meter's use up to its final register and the new one's from its initial register are both charged."""
    from headend.billing.accounts import assign_meter
    from headend.billing.replacement import record_replacement

    conn = await asyncpg.connect(pg_dsn)
    daemon = await asyncpg.connect(daemon_dsn(pg_dsn))  # the billing pass runs as the daemon's login
    try:
        tariff, channel = await _flat_tariff_and_channel(conn, "0.60")
        account = await conn.fetchval(
            "INSERT INTO accounts (number, kind, tariff_id) VALUES ('R-1', 'prepaid', $1) RETURNING id",
            tariff,
        )
        old, new = [
            await conn.fetchval(
                "INSERT INTO meters (protocol, address, model, channel_id) VALUES "
                "('dlt645-2007', $1, 'dlt645-generic', $2) RETURNING id",
                address,
                channel,
            )
            for address in ("1", "2")
        ]
        await assign_from_start(conn, old, account)
        if held_by == "assignment":
            await assign_meter(
                conn, "1", "R-1", at=T0 - timedelta(hours=1), operator="9001", reason="move in"
            )
        await _reading(conn, old, T0, 100.0)
        await _reading(conn, old, T0 + timedelta(minutes=15), 102.0)
        await record_replacement(
            conn,
            "1",
            "2",
            at=T0 + timedelta(minutes=20),
            final={"energy_import_kwh": Decimal("102.5")},
            initial={"energy_import_kwh": Decimal("5.0")},
            operator="9001",
        )
        await _reading(conn, new, T0 + timedelta(minutes=30), 6.0)
        await _reading(conn, new, T0 + timedelta(minutes=45), 7.0)

        billed = await bill_due_prepaid(daemon)
        # (102.5 - 100.0) + (7.0 - 5.0) = 4.5 kWh x 0.60
        assert [(p.account, p.start, p.end, p.amount, p.error) for p in billed] == [
            ("R-1", T0, T0 + timedelta(minutes=45), Decimal("2.70"), None)
        ]
        assert await bill_due_prepaid(daemon) == []
        assert await conn.fetchval("SELECT balance FROM balances WHERE account_id = $1", account) == Decimal(
            "-2.70"
        )
    finally:
        await daemon.close()
        await conn.close()
