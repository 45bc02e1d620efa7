"""The services that run once and the writes to meters, fenced by the database (migration 0074).

* The elected daemon names the services' lease on its connection; once another daemon holds it (this
  one was frozen past it), its automation's commands, bills and ledger entries are refused.
* A clock or parameter write goes out only after ``headend_write_fence`` accepted this daemon's lease
  of the meter's channel at its current epoch."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from headend.config import validate_config
from headend.control.service import run_pass
from headend.drivers import Credentials
from headend.engine.engine import Engine
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.secrets import MeterSecrets
from headend.services import LeaseMoved
from headend.store.cluster import check_write_fence, set_service_fence
from simulators import BusSpec, start_bus
from tests.billing.helpers import assign_from_start
from tests.support.engine import engine_for, import_buses
from tests.support.waiting import wait_until

OTHER = "other:2:bb"
LEDGER = "INSERT INTO ledger (account_id, kind, amount, idempotency_key) VALUES ($1, 'charge', -1, $2)"


async def test_an_ex_leader_commits_no_automatic_command_and_the_elected_one_does(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = await start_bus(BusSpec(meters=1, seed=2680))
    meter = bus.meters[0]
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n[[meters]]\nchannel = "b"\nhas_relay = true\n'
        f'protocol = "dlt645-2007"\naddress = "{meter.address}"\nmodel = "dlt645-generic"\n'
    )
    conn = await asyncpg.connect(pg_dsn)
    await import_inventory(conn, read_inventory(inventory))
    account = await conn.fetchval(
        "INSERT INTO accounts (number, kind, credit_limit) VALUES ('A', 'prepaid', 0) RETURNING id"
    )
    await conn.execute("INSERT INTO balances (account_id, balance) VALUES ($1, -5)", account)
    meter_id = await conn.fetchval("SELECT id FROM meters")
    await assign_from_start(conn, meter_id, account)
    config = validate_config(
        {
            "polling": {"interval": "1h"},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "safety": {"no_weekends": False, "night_start": "00:00", "night_end": "00:00"},
            "billing": {"notice_period": 0, "min_arrears": 0},
            "cluster": {"enabled": True, "renew": "1h", "lease": "3h"},  # renewed only when the test says
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path, DriverPort(MeterSecrets(Credentials(2, "000000"))))
    await engine.start()
    try:
        assert engine.leases is not None
        me = engine.leases.member
        assert engine.elected() == (me, 1)
        assert await conn.fetchval("SELECT owner FROM service_leases WHERE name = 'services'") == me
        # another daemon was elected while this one was frozen: it still believes it is the leader
        await conn.execute("UPDATE service_leases SET owner = $1, epoch = 2", OTHER)
        failures = engine.metrics.fee_control_failures.labels("command")._value.get()
        assert await run_pass(engine, datetime.now(UTC)) == []
        assert engine.metrics.fee_control_failures.labels("command")._value.get() == failures + 1
        assert await conn.fetchval("SELECT count(*) FROM commands") == 0
        # its next renewal sees it is not elected: the automation is not even tried
        await engine.leases.renew(engine.pool)
        assert engine.elected() is None
        assert await run_pass(engine, datetime.now(UTC)) == []
        assert engine.metrics.fee_control_failures.labels("command")._value.get() == failures + 1
        # the other daemon left: this one is elected again (next epoch) and the disconnect goes out once
        await conn.execute("UPDATE service_leases SET expires_at = clock_timestamp()")
        await engine.leases.renew(engine.pool)
        assert engine.elected() == (me, 3)
        assert [state for _, state in await run_pass(engine, datetime.now(UTC))] == ["confirmed"]
        assert meter.model.relay.open and bus.requests[0x1C] == 1
        # a clock or parameter write for the meter: accepted under the current channel lease only
        await engine.write_fence(meter_id)
        await conn.execute("UPDATE channel_leases SET owner = $1, epoch = epoch + 1", OTHER)
        with pytest.raises(LeaseMoved, match="write not sent: the channel lease is held by other"):
            await engine.write_fence(meter_id)
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()


async def test_the_database_refuses_fenced_writes_under_a_moved_lease(pg_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        channel = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:9') RETURNING id"
        )
        meter = await conn.fetchval(
            "INSERT INTO meters (channel_id, protocol, address, model) VALUES ($1, 'dlt645-2007', '1', 'x')"
            " RETURNING id",
            channel,
        )
        account = await conn.fetchval(
            "INSERT INTO accounts (number, kind, credit_limit) VALUES ('F', 'prepaid', 0) RETURNING id"
        )
        # no lease row (a lone daemon, an active/standby pair): nothing is fenced
        await check_write_fence(conn, meter, "", 0)
        await conn.execute("SELECT headend_lease_take($1, 'me:1:aa', interval '1 hour')", channel)
        await check_write_fence(conn, meter, "me:1:aa", 1)
        for owner, epoch in (("me:1:aa", 2), (OTHER, 1), ("", 0)):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match=f"meter {meter}: write not sent"):
                await check_write_fence(conn, meter, owner, epoch)
        await conn.execute("UPDATE channel_leases SET expires_at = clock_timestamp()")  # lapsed
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await check_write_fence(conn, meter, "me:1:aa", 1)
        # the services' lease: a session naming none writes (an operator); naming the current one
        # writes; naming a moved or lapsed one writes nothing
        await conn.execute(LEDGER, account, "k-operator")
        take = "SELECT headend_service_take('services', 'me:1:aa', interval '1 hour')"
        assert await conn.fetchval(take) == 1
        await set_service_fence(conn, "me:1:aa", 1)
        await conn.execute(LEDGER, account, "k-elected")
        await conn.execute("UPDATE service_leases SET owner = $1, epoch = 2", OTHER)
        for statement, args in (
            (LEDGER, (account, "k-ex-leader")),
            (
                "INSERT INTO bills (account_id, period_start, period_end, consumption, amount, due_at)"
                " VALUES ($1, '2026-06-01', '2026-07-01', 10, 5, '2026-07-02')",
                (account,),
            ),
            (
                "INSERT INTO commands (meter_id, action, cause, operator, idempotency_key)"
                " VALUES ($1, 'disconnect', 'arrears', 'system', 'k-1')",
                (meter,),
            ),
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="services lease is held by other"):
                await conn.execute(statement, *args)
        keys = await conn.fetch("SELECT idempotency_key FROM ledger ORDER BY id")
        assert [r["idempotency_key"] for r in keys] == ["k-operator", "k-elected"]
        assert await conn.fetchval("SELECT count(*) FROM bills") == 0
    finally:
        await conn.close()


def _clock_attempts(engine: Engine) -> float:
    """Clock checks done or failed on the test's bus."""
    total = 0.0
    for family in engine.metrics.registry.collect():
        for sample in family.samples:
            if sample.name in ("headend_reads_total", "headend_read_failures_total"):
                total += sample.value if sample.labels.get("kind") == "clock" else 0.0
    return total


@pytest.mark.timeout(120)
async def test_a_member_whose_lease_moved_writes_no_clock(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(BusSpec(meters=1, seed=2690, clock_offsets_s={0: 120.0}))
    conn = await asyncpg.connect(pg_dsn)
    await import_buses(conn, tmp_path / "inv.toml", {"bus": bus})
    clock = {
        "check_every": "1s",
        "max_drift": "60s",
        "broadcast_limit": "10s",  # an addressed write, not a broadcast
        "boundary_guard": "1s",
        "midnight_guard": "1s",
    }
    config = validate_config(
        {
            "polling": {"interval": "2s", "inventory_reload": "1h"},  # clock checks start mid-interval
            "read_plans": {"default": {"quantities": ["energy_import_kwh"]}},
            "backfill": {"enabled": False},
            "clock": clock,
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "timeouts": {"initial": "200ms", "minimum": "100ms", "maximum": "300ms"},
            "cluster": {"enabled": True, "renew": "1h", "lease": "3h"},  # renewed only when the test says
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path, DriverPort(MeterSecrets(Credentials(2, "000000"))))
    await engine.start()
    model = bus.meters[0].model
    try:
        assert engine.leases is not None
        # taken over while this member was frozen, before its first clock check (half an interval on)
        await conn.execute("UPDATE channel_leases SET owner = $1, epoch = 2", OTHER)
        await wait_until(lambda: _clock_attempts(engine) >= 2, 30, "two clock checks")
        assert bus.requests[0x08] == 0 and bus.requests[0x14] == 0  # no broadcast, no write
        assert model.clock.error().total_seconds() > 100
        meter_id = await conn.fetchval("SELECT id FROM meters")
        assert engine.health.of(meter_id).failures == 0  # refused by the fence: not the meter's fault
        # the other member left: this one takes the lease back (next epoch) and corrects the clock
        await conn.execute("UPDATE channel_leases SET expires_at = clock_timestamp()")
        await engine.leases.renew(engine.pool)
        assert engine.lease_of(await conn.fetchval("SELECT id FROM meters")) == (engine.leases.member, 3)
        await wait_until(lambda: abs(model.clock.error().total_seconds()) < 5, 30, "the clock corrected")
        assert bus.requests[0x14] == 2  # one write: date and time
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()
