"""A cluster member frozen (SIGSTOP) past its lease: the other daemon takes the channel with the next
epoch and executes the relay command made meanwhile; the frozen one, woken (SIGCONT), sends no relay
frame (counted at the simulated bus) and stores no duplicate reading."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from simulators import BusSpec, start_bus
from tests.support import cli
from tests.support.daemons import Daemon, free_port
from tests.support.operators import add_operators, import_inventory_cli, operator_env
from tests.support.waiting import wait_until

RENEW_S = 0.5
LEASE_S = 3.0
TAKEOVER_S = LEASE_S + 4 * RENEW_S + 5.0


async def start_member(name: str, dsn: str, tmp_path: Path) -> Daemon:
    metrics_port = free_port()
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[default]\npassword_level = 2\npassword = "000000"\n')
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{tmp_path / f"spool-{name}"}"\n'
        '[polling]\ninterval = "2s"\noffset = "0s"\ninventory_reload = "1h"\n'
        '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
        "[backfill]\nenabled = false\n[clock]\nenabled = false\n[events]\nenabled = false\n"
        '[timeouts]\ninitial = "1s"\nmaximum = "2s"\n'
        f'[secrets]\nfile = "{secrets}"\n'
        '[engine]\nservices = ["headend.control.service:run"]\n[safety]\nrun_every = "1s"\n'
        f'[cluster]\nenabled = true\nrenew = "{RENEW_S}s"\nlease = "{LEASE_S}s"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )
    return await Daemon.start(config, tmp_path / f"state-{name}", metrics_port)


async def test_a_frozen_member_woken_after_its_lease_sends_no_relay_frame(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = await start_bus(BusSpec(meters=1, seed=2660))
    meter = bus.meters[0]
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n'
        f'[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{meter.address}"\n'
        'model = "dlt645-generic"\nname = "m-1"\nhas_relay = true\n'
    )
    assert import_inventory_cli(pg_dsn, inventory).returncode == 0
    conn = await asyncpg.connect(pg_dsn)
    await add_operators(conn, o7="operator,approver", o8="approver")
    frozen = await start_member("a", pg_dsn, tmp_path)
    daemons = [frozen]
    try:

        async def lease() -> tuple[int, int] | None:
            row = await conn.fetchrow(
                "SELECT owner, epoch FROM channel_leases WHERE expires_at > clock_timestamp()"
            )
            return None if row is None else (int(row["owner"].split(":")[-2]), row["epoch"])

        await wait_until(lambda: _is(lease, (frozen.proc.pid, 1)), 30, "the first daemon's lease")
        frozen.proc.send_signal(signal.SIGSTOP)
        other = await start_member("b", pg_dsn, tmp_path)
        daemons.append(other)
        # made while the owner is frozen and before anyone else holds the channel: waits for its owner
        env = operator_env()
        created = cli.headend(
            "commands",
            "create",
            "m-1",
            "disconnect",
            "--operator",
            "7",
            "--reason",
            "x",
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
        await wait_until(lambda: _is(lease, (other.proc.pid, 2)), TAKEOVER_S, "the take-over at epoch 2")

        async def confirmed() -> bool:
            state = await conn.fetchval("SELECT state::text FROM commands WHERE id = $1", command_id)
            return state == "confirmed"

        await wait_until(confirmed, 30, "the command executed by the new owner")
        assert bus.requests[0x1C] == 1 and meter.model.relay.open
        frozen.proc.send_signal(signal.SIGCONT)
        # woken: it learns at its first renewal that the channel is not its own any more
        released = await frozen.wait_logged("cluster channels changed", count=2, timeout=30)
        assert released["released"] and not released["channels"]
        assert bus.requests[0x1C] == 1  # no second frame

        async def stored() -> bool:  # the owners' readings reached the database (the check is not vacuous)
            return bool(await conn.fetchval("SELECT count(*) FROM readings") > 0)

        await wait_until(stored, 30, "readings stored by the channel's owners")
        duplicates = await conn.fetchval(
            "SELECT count(*) - count(DISTINCT (meter_id, quantity_id, ts)) FROM readings"
        )
        assert duplicates == 0
        assert await lease() == (other.proc.pid, 2)
    finally:
        for daemon in daemons:
            if daemon.proc.returncode is None:
                daemon.proc.send_signal(signal.SIGCONT)
            await daemon.close()
        await conn.close()
        await bus.stop()


async def _is(probe: Callable[[], Awaitable[object]], expected: object) -> bool:
    return await probe() == expected
