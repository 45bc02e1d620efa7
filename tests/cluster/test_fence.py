"""Fencing (migration 0065): the transaction that moves a relay command to ``sent`` names the channel
lease the daemon acts under, and the database refuses it unless that lease is the current one. An
engine in a cluster whose lease another daemon has taken (it was frozen past the lease) sends nothing;
under the current lease the same command goes out once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from headend.config import validate_config
from headend.control.service import run_pass
from headend.drivers import Credentials
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.secrets import MeterSecrets
from simulators import BusSpec, start_bus
from tests.support import cli
from tests.support.engine import engine_for
from tests.support.logins import daemon_dsn
from tests.support.operators import add_operators, operator_env


async def test_a_daemon_whose_lease_was_taken_sends_no_relay_frame(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(BusSpec(meters=1, seed=2650))
    meter = bus.meters[0]
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n'
        f'[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{meter.address}"\n'
        'model = "dlt645-generic"\nname = "m-1"\nhas_relay = true\n'
    )
    conn = await asyncpg.connect(pg_dsn)
    await add_operators(conn, o7="operator,approver", o8="approver")
    await import_inventory(conn, read_inventory(inventory))
    config = validate_config(
        {
            "polling": {"interval": "1h"},
            "backfill": {"enabled": False},
            "clock": {"enabled": False},
            "events": {"enabled": False},
            "metrics": {"port": 0},
            "cluster": {"enabled": True, "renew": "1h", "lease": "3h"},  # no renewal during the test
        },
        "test",
    )
    engine = engine_for(config, pg_dsn, tmp_path, DriverPort(MeterSecrets(Credentials(2, "000000"))))
    await engine.start()
    try:
        lease = await conn.fetchrow("SELECT channel_id, owner, epoch FROM channel_leases")
        assert engine.leases is not None and lease["owner"] == engine.leases.member and lease["epoch"] == 1
        env = operator_env()
        created = cli.headend(
            "commands",
            "create",
            "m-1",
            "disconnect",
            "--operator",
            "7",
            "--reason",
            "tamper",
            "--dsn",
            pg_dsn,
            env=env,
        )
        assert created.returncode == 0, created.stderr
        command_id = int(created.stdout.split()[1])
        approved = cli.headend(
            "commands", "approve", str(command_id), "--operator", "8", "--dsn", pg_dsn, env=env
        )
        assert approved.returncode == 0, approved.stderr
        # another daemon took the channel over while this one was frozen: next epoch, its name
        await conn.execute("UPDATE channel_leases SET owner = 'other:2:bb', epoch = 2")
        failures = engine.metrics.fee_control_failures.labels("execute")._value.get()
        assert await run_pass(engine, datetime.now(UTC)) == []  # refused by the database: counted
        assert engine.metrics.fee_control_failures.labels("execute")._value.get() == failures + 1
        assert bus.requests[0x1C] == 0 and not meter.model.relay.open
        state = await conn.fetchval("SELECT state::text FROM commands WHERE id = $1", command_id)
        assert state == "pending"
        # the lease expired without a new owner: still refused under the old epoch
        await conn.execute(
            "UPDATE channel_leases SET owner = $1, epoch = 1, expires_at = now() - interval '1 second'",
            engine.leases.member,
        )
        assert await run_pass(engine, datetime.now(UTC)) == []
        assert bus.requests[0x1C] == 0
        # the lease current again, under this daemon's epoch: the frame goes out once, confirmed
        await conn.execute("UPDATE channel_leases SET expires_at = now() + interval '1 hour'")
        assert await run_pass(engine, datetime.now(UTC)) == [(command_id, "confirmed")]
        assert bus.requests[0x1C] == 1 and meter.model.relay.open
    finally:
        await engine.stop()
        await conn.close()
        await bus.stop()


async def test_the_database_refuses_a_sent_without_the_current_lease(pg_dsn: str, tmp_path: Path) -> None:
    bus = await start_bus(BusSpec(meters=1, seed=2651))
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n'
        f'[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{bus.meters[0].address}"\n'
        'model = "dlt645-generic"\nname = "m-1"\nhas_relay = true\n'
    )
    owner = await asyncpg.connect(pg_dsn)
    daemon = await asyncpg.connect(daemon_dsn(pg_dsn))
    try:
        await add_operators(owner, o7="operator,approver", o8="approver")
        await import_inventory(owner, read_inventory(inventory))
        env = operator_env()
        created = cli.headend(
            "commands",
            "create",
            "m-1",
            "reconnect",
            "--operator",
            "7",
            "--reason",
            "paid",
            "--dsn",
            pg_dsn,
            env=env,
        )
        assert created.returncode == 0, created.stderr
        command_id = int(created.stdout.split()[1])
        channel = await owner.fetchval("SELECT id FROM channels")
        assert (
            await daemon.fetchval("SELECT headend_lease_take($1, 'a:1:aa', interval '1 hour')", channel) == 1
        )
        assert (
            await daemon.fetchval("SELECT headend_lease_take($1, 'b:2:bb', interval '1 hour')", channel)
            is None
        )

        async def send(settings: tuple[str, str] | None) -> None:
            async with daemon.transaction():
                await daemon.execute("SELECT set_config('headend.actor', 'executor', true)")
                if settings is not None:
                    await daemon.execute(
                        "SELECT set_config('headend.lease_owner', $1, true),"
                        " set_config('headend.lease_epoch', $2, true)",
                        *settings,
                    )
                await daemon.execute(
                    "UPDATE commands SET state = 'sent', attempts = attempts + 1 WHERE id = $1", command_id
                )

        for wrong in (None, ("b:2:bb", "1"), ("a:1:aa", "2")):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="channel lease is held by a:1:aa"):
                await send(wrong)
        await send(("a:1:aa", "1"))
        assert await owner.fetchval("SELECT state::text FROM commands WHERE id = $1", command_id) == "sent"
    finally:
        await daemon.close()
        await owner.close()
        await bus.stop()
