"""A cluster member frozen (SIGSTOP) past its lease: the other daemon takes the channel with the next
epoch and executes the relay command made meanwhile; the frozen one, woken (SIGCONT), sends no relay
frame (counted at the simulated bus) and stores no duplicate reading. Then the elected member is
frozen in the middle of the fee-control automation (its disconnect for an account in arrears on its
way to the database): the other is elected, disconnects the meter once; the woken ex-leader commits
no second command and sends no relay frame."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from simulators import BusSpec, start_bus
from tests.billing.helpers import assign_from_start
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
        'no_weekends = false\nnight_start = "00:00"\nnight_end = "00:00"\n'
        "[billing]\nnotice_period = 0\nmin_arrears = 0\n"
        f'[cluster]\nenabled = true\nrenew = "{RENEW_S}s"\nlease = "{LEASE_S}s"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )
    return await Daemon.start(config, tmp_path / f"state-{name}", metrics_port)


@pytest.mark.long(seconds=25)
async def test_a_frozen_member_woken_after_its_lease_sends_no_relay_frame(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = await start_bus(BusSpec(meters=2, seed=2660))
    meter, owing = bus.meters
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n'
        + "".join(
            f'[[meters]]\nchannel = "b"\nprotocol = "dlt645-2007"\naddress = "{m.address}"\n'
            f'model = "dlt645-generic"\nname = "m-{n}"\nhas_relay = true\n'
            for n, m in enumerate(bus.meters, 1)
        )
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

        # the elected member (b, since a froze) freezes in the middle of the fee-control automation:
        # its disconnect for an account in arrears waits at the database (the test holds the table)
        async def elected() -> tuple[int, int]:
            row = await conn.fetchrow("SELECT owner, epoch FROM service_leases WHERE name = 'services'")
            return int(row["owner"].split(":")[-2]), row["epoch"]

        leader, services_epoch = await elected()  # epoch 1 or 2: a may have frozen before it was elected
        assert leader == other.proc.pid
        locker = await asyncpg.connect(pg_dsn)
        held = locker.transaction()
        await held.start()
        await locker.execute("LOCK TABLE commands IN SHARE MODE")  # inserts wait, reads go on
        owing_id = await conn.fetchval("SELECT id FROM meters WHERE name = 'm-2'")
        async with conn.transaction():
            account = await conn.fetchval(
                "INSERT INTO accounts (number, kind, credit_limit, arrears, arrears_since)"
                " VALUES ('A-2', 'prepaid', 0, true, now()) RETURNING id"
            )
            await conn.execute("INSERT INTO balances (account_id, balance) VALUES ($1, -5)", account)
            await assign_from_start(conn, owing_id, account)

        async def inserting() -> bool:  # the automation's insert, the one statement waiting on the table
            waiting = await conn.fetch(
                "SELECT a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE NOT l.granted AND l.relation = 'commands'::regclass"
            )
            return [r["query"].split("(")[0].strip() for r in waiting] == ["INSERT INTO commands"]

        await wait_until(inserting, 15, "b's automatic disconnect on its way to the database")
        other.proc.send_signal(signal.SIGSTOP)
        taken = (frozen.proc.pid, services_epoch + 1)
        await wait_until(lambda: _is(elected, taken), TAKEOVER_S, "a elected with the next epoch")
        await held.rollback()  # b's insert goes on at the database, under the services lease it lost
        await locker.close()
        automatic = "SELECT meter_id, state::text AS state FROM commands WHERE operator = 'system'"
        await wait_until(lambda: conn.fetch(automatic), 30, "the disconnect made by the elected member")
        other.proc.send_signal(signal.SIGCONT)  # woken: it learns its insert was refused, then stands down
        await other.wait_logged("cluster services elsewhere", 30)
        await wait_until(lambda: _is(lambda: _states(conn, automatic), [(owing_id, "confirmed")]), 30, "cut")
        await other.wait_logged("cluster channels changed", count=2, timeout=30)  # took it, then let go
        refused = 'stage="command"'
        assert await other.metric("headend_fee_control_item_failures_total", refused) == 1
        assert await frozen.metric("headend_fee_control_item_failures_total", refused) == 0
        assert bus.requests[0x1C] == 2 and owing.model.relay.open  # one frame for each command
        assert await _states(conn, automatic) == [(owing_id, "confirmed")]
    finally:
        for daemon in daemons:
            if daemon.proc.returncode is None:
                daemon.proc.send_signal(signal.SIGCONT)
            await daemon.close()
        await conn.close()
        await bus.stop()


async def _states(conn: asyncpg.Connection, query: str) -> list[tuple[int, str]]:
    return [(r["meter_id"], r["state"]) for r in await conn.fetch(query)]


async def _is(probe: Callable[[], Awaitable[object]], expected: object) -> bool:
    return await probe() == expected
