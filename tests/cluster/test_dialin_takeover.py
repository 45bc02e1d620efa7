"""Dial-in take-over (issue 26): a DTU connects to whichever of two ``headend run`` cluster members its
network sends it to. While the member holding its channel has it connected, a second connection with
its identity at the other member (an impostor) is a conflict there: closed, counted, listed by
``channels pending``; the lease does not move. Once the device's connection is gone, the member it
connects to takes the channel's lease with the next epoch and reads through it; the member that held
it lets go at its next renewal. Who reads is counted at the simulated DTUs (the requests each
connection carried)."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from headend.store.dialin import list_pending
from simulators import BusSpec, SimBus
from simulators.dtu import DtuSpec, SimDtu
from tests.support.daemons import Daemon, free_port
from tests.support.operators import import_inventory_cli
from tests.support.waiting import wait_until

RENEW_S = 0.5
LEASE_S = 3.0
INTERVAL_S = 1.0
IDENTITY = "DTU-MOVE"


async def start_member(name: str, dsn: str, tmp_path: Path, listen_port: int) -> Daemon:
    metrics_port = free_port()
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{tmp_path / f"spool-{name}"}"\n'
        f'[polling]\ninterval = "{INTERVAL_S}s"\noffset = "0s"\ninventory_reload = "1h"\n'
        '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
        "[backfill]\nenabled = false\n[clock]\nenabled = false\n[events]\nenabled = false\n"
        '[timeouts]\ninitial = "1s"\nmaximum = "2s"\n'
        f'[cluster]\nenabled = true\nrenew = "{RENEW_S}s"\nlease = "{LEASE_S}s"\n'
        f'[listen]\npending_flush = "0.5s"\n[[listen.listeners]]\naddress = "127.0.0.1:{listen_port}"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )
    return await Daemon.start(config, tmp_path / f"state-{name}", metrics_port)


def pid_of(member: str) -> int:
    return int(member.split(":")[-2])


async def test_an_impostor_at_another_member_is_a_conflict_and_the_device_moves_once_it_hung_up(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = SimBus(BusSpec(meters=1, seed=2670, transport="carried"))
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "village"\nurl = "dtu://{IDENTITY}?baud=2400"\n'
        '[[meters]]\nchannel = "village"\nprotocol = "dlt645-2007"\n'
        f'address = "{bus.meters[0].address}"\nmodel = "dlt645-generic"\n'
    )
    assert import_inventory_cli(pg_dsn, inventory).returncode == 0
    conn = await asyncpg.connect(pg_dsn)
    ports = {"a": free_port(), "b": free_port()}
    first = await start_member("a", pg_dsn, tmp_path, ports["a"])
    second = await start_member("b", pg_dsn, tmp_path, ports["b"])
    # the first connection's redial waits long: only the network's switch brings the device to b
    old = SimDtu(DtuSpec(IDENTITY, "127.0.0.1", ports["a"], backoff_s=60.0), bus)
    new = SimDtu(DtuSpec(IDENTITY, "127.0.0.1", ports["b"], backoff_s=60.0), bus)
    # an impostor: the same registration id, other meters behind it, from the same allowed network
    others = SimBus(BusSpec(meters=1, seed=9, transport="carried"))
    impostor = SimDtu(DtuSpec(IDENTITY, "127.0.0.1", ports["b"], backoff_s=60.0), others)
    lease_query = "SELECT owner, epoch, connected FROM channel_leases"
    try:
        await first.wait_logged("engine started", 30)
        await second.wait_logged("engine started", 30)
        assert await conn.fetch(lease_query) == []  # nobody reads a dial-in channel before it connects
        await old.start()

        async def held_by(daemon: Daemon) -> bool:
            lease = await conn.fetchrow(lease_query)
            return lease is not None and pid_of(lease["owner"]) == daemon.proc.pid

        await wait_until(lambda: held_by(first), 20, "the lease taken by the member the DTU connected to")
        await wait_until(lambda: old.counts["requests"] > 0, 20, "a read through the first connection")
        lease = await conn.fetchrow(lease_query)
        epoch = lease["epoch"]
        assert lease["connected"] is True

        await impostor.start()
        await wait_until(lambda: impostor.counts["dropped"] == 1, 10, "the impostor's connection closed")
        await wait_until(
            lambda: second.metric("headend_dialin_events", 'event="conflict"'), 5, "the conflict counted at b"
        )
        assert await second.metric("headend_dialin_events", 'event="conflict"') == 1
        assert await first.metric("headend_dialin_events", 'event="conflict"') == 0

        async def listed() -> list[tuple[str, int]]:
            return [(r.identity, r.conflicts) for r in await list_pending(conn)]

        await wait_until(listed, 5, "the conflict listed by `channels pending`")
        assert await listed() == [(IDENTITY, 1)]
        before = old.counts["requests"]
        await wait_until(lambda: old.counts["requests"] > before + 1, 4 * INTERVAL_S + 5, "reads through a")
        lease = await conn.fetchrow(lease_query)
        assert (pid_of(lease["owner"]), lease["epoch"], lease["connected"]) == (first.proc.pid, epoch, True)
        assert old.counts["dropped"] == 0
        assert impostor.counts["requests"] == 0
        assert await second.metric("headend_cluster_moves_total", 'direction="seized"') == 0

        # the device hangs up at a and the network sends it to b
        await old.stop()

        async def hung_up() -> bool:
            return (await conn.fetchrow(lease_query))["connected"] is False

        await wait_until(hung_up, 5, "a's lease saying the device hung up")
        stale_requests = old.counts["requests"]
        await new.start()
        await wait_until(lambda: held_by(second), 20, "the lease taken by the member it connected to now")
        assert (await conn.fetchrow(lease_query))["epoch"] == epoch + 1
        before = new.counts["requests"]
        await wait_until(lambda: new.counts["requests"] > before + 1, 6 * INTERVAL_S + 5, "reads through b")
        assert old.counts["requests"] == stale_requests
        lost = 'direction="lost"'
        await wait_until(lambda: first.metric("headend_cluster_moves_total", lost), 4 * RENEW_S + 5, "a gone")
        moves = await conn.fetch("SELECT from_owner, to_owner, epoch, reason FROM lease_moves ORDER BY id")
        assert [(r["reason"], r["epoch"]) for r in moves] == [("first", epoch), ("seized", epoch + 1)]
        assert pid_of(moves[1]["from_owner"]) == first.proc.pid
        assert await second.metric("headend_cluster_moves_total", 'direction="seized"') == 1
        assert await first.metric("headend_cluster_moves_total", 'direction="lost"') == 1
        assert await first.metric("headend_cluster_channels") == 0
        assert await second.metric("headend_cluster_channels") == 1
    finally:
        await old.stop()
        await new.stop()
        await impostor.stop()
        await first.close()
        await second.close()
        await conn.close()
