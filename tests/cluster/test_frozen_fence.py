"""A cluster member frozen (SIGSTOP) inside a fenced write: its relay command's move to ``sent`` passed
the channel's fence and holds the lease locked, and its transaction never ends. The lease moves anyway
(migration 0085): the server ends the frozen member's session once its fenced transaction has been idle
for a lease, the other member takes the channel with the next epoch at its next renewal, polls the bus
and executes the command (rolled back to ``pending`` with the session). Woken (SIGCONT), the frozen
member's write is refused and counted, and it sends no relay frame: one 0x1C at the simulated bus."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import asyncpg
import pytest

from simulators import BusSpec, start_bus
from tests.cluster.test_frozen_member import LEASE_S, RENEW_S, _is, start_member
from tests.support import cli
from tests.support.daemons import Daemon
from tests.support.operators import add_operators, import_inventory_cli, operator_env
from tests.support.waiting import wait_until

MOVED_S = LEASE_S + 2 * RENEW_S + 3.0  # the session ends after a lease idle; a renewal; scheduling


@pytest.mark.long(seconds=25)
async def test_a_member_frozen_inside_a_fenced_write_loses_the_channel_within_a_lease(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = await start_bus(BusSpec(meters=1, seed=2685))
    meter = bus.meters[0]
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "b"\nurl = "{bus.url}"\n\n[[meters]]\nchannel = "b"\n'
        f'protocol = "dlt645-2007"\naddress = "{meter.address}"\nmodel = "dlt645-generic"\n'
        'name = "m-1"\nhas_relay = true\n'
    )
    assert import_inventory_cli(pg_dsn, inventory).returncode == 0
    conn = await asyncpg.connect(pg_dsn)
    await add_operators(conn, o7="operator,approver", o8="approver")
    env = operator_env()
    created = cli.headend(
        "commands", "create", "m-1", "disconnect", "--operator", "7", "--reason", "x", "--dsn", pg_dsn,
        env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    command_id = int(created.stdout.split()[1])
    if "waits for approval" in created.stdout:
        approved = cli.headend(
            "commands", "approve", str(command_id), "--operator", "8", "--dsn", pg_dsn, env=env
        )
        assert approved.returncode == 0, approved.stderr
    # the audit row of the move to `sent` waits for the test: the fence before it has passed by then
    locker = await asyncpg.connect(pg_dsn)
    held = locker.transaction()
    await held.start()
    await locker.execute("LOCK TABLE audit_log IN SHARE MODE")
    daemons: list[Daemon] = []
    try:
        frozen = await start_member("a", pg_dsn, tmp_path)
        daemons.append(frozen)

        async def lease() -> tuple[int, int] | None:
            row = await conn.fetchrow(
                "SELECT owner, epoch FROM channel_leases WHERE expires_at > clock_timestamp()"
            )
            return None if row is None else (int(row["owner"].split(":")[-2]), row["epoch"])

        async def sending() -> bool:  # a's move to `sent`, past the fence, waiting on its audit row
            waiting = await conn.fetch(
                "SELECT a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE NOT l.granted AND l.relation = 'audit_log'::regclass"
            )
            return [r["query"].split(" SET ")[0].strip() for r in waiting] == ["UPDATE commands"]

        await wait_until(sending, 30, "a's command on its way to `sent`")
        assert await lease() == (frozen.proc.pid, 1)
        with pytest.raises(asyncpg.LockNotAvailableError):  # the fence holds the lease locked
            async with conn.transaction():
                await conn.execute("SELECT 1 FROM channel_leases FOR UPDATE NOWAIT")
        frozen.proc.send_signal(signal.SIGSTOP)
        other = await start_member("b", pg_dsn, tmp_path)
        daemons.append(other)
        await other.wait_logged("engine started", 30)
        await held.rollback()  # a's statement ends at the server; its transaction stays open, idle
        released_at = time.monotonic()
        await wait_until(lambda: _is(lease, (other.proc.pid, 2)), MOVED_S, "b holding the lease at epoch 2")
        assert time.monotonic() - released_at < MOVED_S
        polled = bus.requests[0x11]
        await wait_until(lambda: bus.requests[0x11] > polled, 10, "b polling the bus")  # a is frozen

        async def confirmed() -> bool:
            state = await conn.fetchval("SELECT state::text FROM commands WHERE id = $1", command_id)
            return state == "confirmed"

        await wait_until(confirmed, 30, "the command executed by b")
        assert bus.requests[0x1C] == 1 and meter.model.relay.open
        frozen.proc.send_signal(signal.SIGCONT)  # woken: its commit finds its session gone
        refused = 'stage="execute"'
        await wait_until(
            lambda: frozen.metric("headend_fee_control_item_failures_total", refused), 30, "a's refusal"
        )
        assert await frozen.metric("headend_fee_control_item_failures_total", refused) == 1
        released = await frozen.wait_logged("cluster channels changed", count=2, timeout=30)
        assert released["released"] and not released["channels"]
        assert bus.requests[0x1C] == 1  # no second frame
        assert await other.metric("headend_fee_control_item_failures_total", refused) == 0
        sent = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE entity = 'command' AND entity_id = $1"
            " AND action = 'command.sent'",
            str(command_id),
        )
        assert sent == 1
        assert await lease() == (other.proc.pid, 2)
    finally:
        await locker.close()  # rolls the lock back if the test ended while holding it
        for daemon in daemons:
            if daemon.proc.returncode is None:
                daemon.proc.send_signal(signal.SIGCONT)
            await daemon.close()
        await conn.close()
        await bus.stop()
