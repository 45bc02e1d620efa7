"""Fee control in the daemon's engine: an account in arrears is disconnected through the channel worker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from headend.config import validate_config
from headend.control.service import run_pass
from headend.drivers import Credentials
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.secrets import MeterSecrets
from simulators import BusSpec, SimBus, start_bus
from tests.billing.helpers import assign_from_start
from tests.support.engine import engine_for
from tests.support.postgres import CountingPool
from tests.support.waiting import wait_until


async def _relay_meter_in_arrears(
    pg_dsn: str, tmp_path: Path, seed: int
) -> tuple[SimBus, Any, asyncpg.Connection]:
    """One simulated meter with a relay, in the inventory, on a prepaid account 5 in debt."""
    bus = await start_bus(BusSpec(meters=1, seed=seed))
    meter = bus.meters[0]
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n[[meters]]\nchannel = "b"\n'
        f'protocol = "dlt645-2007"\naddress = "{meter.address}"\nmodel = "dlt645-generic"\n'
    )
    conn = await asyncpg.connect(pg_dsn)
    await import_inventory(conn, read_inventory(inventory))
    await conn.execute("INSERT INTO accounts (number, kind, credit_limit) VALUES ('A', 'prepaid', 0)")
    await conn.execute("INSERT INTO balances (account_id, balance) SELECT id, -5 FROM accounts")
    await conn.execute("UPDATE meters SET has_relay = true")
    await assign_from_start(
        conn, await conn.fetchval("SELECT id FROM meters"), await conn.fetchval("SELECT id FROM accounts")
    )
    return bus, meter, conn


async def test_arrears_disconnects_and_payment_reconnects_via_engine(pg_dsn: str, tmp_path: Path) -> None:
    bus, meter, conn = await _relay_meter_in_arrears(pg_dsn, tmp_path, seed=81)
    config = validate_config(
        {
            "polling": {"interval": "1h"},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "safety": {"no_weekends": False, "night_start": "00:00", "night_end": "00:00"},
            "billing": {"notice_period": 0, "min_arrears": 0},  # relay mechanics, not the arrears rule
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path, DriverPort(MeterSecrets(Credentials(2, "000000"))))
    await engine.start()
    try:
        now = datetime.now(UTC)
        assert [state for _, state in await run_pass(engine, now)] == ["confirmed"]
        assert meter.model.relay.open and bus.requests[0x1C] == 1
        assert await run_pass(engine, now) == []  # the flag never creates a second command
        await conn.execute("UPDATE balances SET balance = 10")
        assert [state for _, state in await run_pass(engine, now)] == ["confirmed"]
        assert not meter.model.relay.open and bus.requests[0x1C] == 2
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()


async def test_daemon_service_runs_a_pass_every_configured_interval(pg_dsn: str, tmp_path: Path) -> None:
    bus, meter, conn = await _relay_meter_in_arrears(pg_dsn, tmp_path, seed=82)
    config = validate_config(
        {
            "engine": {"services": ["headend.control.service:run"]},
            "polling": {"interval": "1h"},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "safety": {
                "no_weekends": False,
                "night_start": "00:00",
                "night_end": "00:00",
                "run_every": "200ms",
            },
            "billing": {"notice_period": 0, "min_arrears": 0},
        },
        "test",
    )
    assert validate_config({}, "default").safety.run_every == 30.0
    engine = engine_for(config, pg_dsn, tmp_path, DriverPort(MeterSecrets(Credentials(2, "000000"))))

    async def confirmed(action: str) -> bool:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM commands WHERE action = $1 AND state = 'confirmed'", action
            )
        )

    await engine.start()
    try:
        # 10 s: many passes at 200 ms, none at the 30 s default after the first
        await wait_until(lambda: confirmed("disconnect"), 10, "a confirmed disconnect")
        assert meter.model.relay.open
        await conn.execute("UPDATE balances SET balance = 10")  # paid while the daemon runs
        await wait_until(lambda: confirmed("reconnect"), 10, "a confirmed reconnect")
        assert not meter.model.relay.open
        assert bus.requests[0x1C] == 2
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()


async def test_fee_control_says_a_database_outage_once_not_once_per_pass(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from headend.control.service import run
    from headend.metrics import EngineMetrics
    from headend.services import EngineServices

    config = validate_config({"safety": {"run_every": "100ms"}}, "test")
    unreachable = f"postgresql://postgres@/headend?host={tmp_path / 'no-server'}&port=5432"
    pool = CountingPool(await asyncpg.create_pool(unreachable, min_size=0, timeout=1))

    async def no_bus(meter_id: int, body: object) -> None:
        raise AssertionError("no command can be due without a database")

    service = asyncio.create_task(run(EngineServices(config, pool, EngineMetrics(), no_bus)))  # type: ignore[arg-type]
    try:
        await wait_until(
            lambda: service.done() or any("fee control" in r.getMessage() for r in caplog.records),
            30,
            "the outage warning",
        )
        assert not service.done(), service
        passes = pool.acquired
        await wait_until(lambda: pool.acquired >= passes + 10, 30, "ten more failing passes")
    finally:
        service.cancel()
        await asyncio.gather(service, return_exceptions=True)
        await pool.pool.close()
    lines = [r for r in caplog.records if "fee control" in r.getMessage()]
    assert [r.getMessage() for r in lines] == ["fee control waits for the database"]
    assert all(r.exc_info is None for r in lines)
