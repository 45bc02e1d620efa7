"""Dial-in take-over (issue 26): a DTU connects to whichever of two ``headend run`` cluster members its
network sends it to. While the member holding its channel has it connected (its connection answers),
a second connection with its identity at the other member (an impostor) is a conflict there: closed,
counted, listed by ``channels pending``; the lease does not move. While the device has no connection
anywhere, a connection with its identity must prove it (its meter answers with the recorded number)
before its member takes the lease: an impostor (or a connection whose meters stay silent) is closed
and the lease stays where it was. The real
device connecting to the other member moves the lease there with the next epoch; the member that
held it lets go at its next renewal. A connection that goes quiet without closing (half-open) keeps
the device only for ``replace_silent_after``: the device dialling the first member again gets the
lease there long before ``silent_timeout``, and the quiet connection is closed and read no more.
Who reads is counted at the simulated DTUs (the requests each connection carried)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from headend.store.dialin import list_pending
from simulators import BusSpec, SimBus
from simulators.dtu import DtuSpec, SimDtu, impostor_bus
from tests.support.daemons import Daemon, free_port
from tests.support.operators import import_inventory_cli
from tests.support.waiting import wait_until

RENEW_S = 0.5
LEASE_S = 3.0
INTERVAL_S = 1.0
IDENTITY = "DTU-MOVE"
QUIET_S = 3.0  # replace_silent_after: a connection quiet this long no longer keeps the device
HEARTBEAT_S = 0.5


DTU_LISTENER = f'heartbeat = "HB"\nreplace_silent_after = "{QUIET_S}s"\n'
"""The listener's own lines for DTUs (``start_member``'s ``listener``)."""


async def start_member(
    name: str, dsn: str, tmp_path: Path, listen_port: int, listener: str = DTU_LISTENER
) -> Daemon:
    """A cluster member (lease ``LEASE_S``, polling every ``INTERVAL_S``) listening on ``listen_port``
    with ``listener``'s lines (kind, heartbeat, quiet time)."""
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
        f'{listener}silent_timeout = "1h"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )
    return await Daemon.start(config, tmp_path / f"state-{name}", metrics_port)


def pid_of(member: str) -> int:
    return int(member.split(":")[-2])


def dtu(bus: SimBus, port: int, *, backoff_s: float = 60.0) -> SimDtu:
    """A DTU dialling ``port`` with heartbeats (a long backoff: only the test moves it elsewhere)."""
    spec = DtuSpec(IDENTITY, "127.0.0.1", port, heartbeat=b"HB", heartbeat_s=HEARTBEAT_S, backoff_s=backoff_s)
    return SimDtu(spec, bus)


@pytest.mark.long(seconds=35)
async def test_an_impostor_is_refused_and_the_device_moves_once_it_hung_up_or_went_quiet(
    pg_dsn: str, tmp_path: Path
) -> None:
    bus = SimBus(BusSpec(meters=1, seed=2670, transport="carried"))
    meter = bus.meters[0]
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "village"\nurl = "dtu://{IDENTITY}?baud=2400"\n'
        '[[meters]]\nchannel = "village"\nprotocol = "dlt645-2007"\n'
        f'address = "{meter.address}"\nmodel = "dlt645-generic"\n'
        f'meter_number = "{meter.model.meter_number}"\n'
    )
    assert import_inventory_cli(pg_dsn, inventory).returncode == 0
    conn = await asyncpg.connect(pg_dsn)
    ports = {"a": free_port(), "b": free_port()}
    first = await start_member("a", pg_dsn, tmp_path, ports["a"])
    second = await start_member("b", pg_dsn, tmp_path, ports["b"])
    old = dtu(bus, ports["a"])
    new = dtu(bus, ports["b"])
    # an impostor: the same registration id, other meters behind it, from the same allowed network
    others = SimBus(BusSpec(meters=1, seed=9, transport="carried"))
    impostor = dtu(others, ports["b"])
    silent = dtu(others, ports["b"])  # the same: nothing answers the real meter's address
    # one whose meter answers the real address, with another meter number
    lookalike = dtu(impostor_bus(bus, seed=11), ports["b"])
    back = dtu(bus, ports["a"])  # the device again at a, while its connection at b is half-open
    devices = (old, new, impostor, silent, lookalike, back)
    lease_query = "SELECT owner, epoch, connected FROM channel_leases"

    async def lease() -> tuple[int, int, bool]:
        row = await conn.fetchrow(lease_query)
        return pid_of(row["owner"]), row["epoch"], row["connected"]

    try:
        await first.wait_logged("engine started", 30)
        await second.wait_logged("engine started", 30)
        assert await conn.fetch(lease_query) == []  # nobody reads a dial-in channel before it connects
        await old.start()

        async def held_by(daemon: Daemon) -> bool:
            row = await conn.fetchrow(lease_query)
            return row is not None and pid_of(row["owner"]) == daemon.proc.pid

        await wait_until(lambda: held_by(first), 20, "the lease taken by the member the DTU connected to")
        await wait_until(lambda: old.counts["requests"] > 1, 20, "a read through the first connection")
        epoch = (await lease())[1]
        assert await lease() == (first.proc.pid, epoch, True)

        # 1. the device connected and answering at a: an impostor at b is a conflict there
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
        assert await lease() == (first.proc.pid, epoch, True)
        assert old.counts["dropped"] == 0
        assert impostor.counts["requests"] == 0
        assert await second.metric("headend_cluster_moves_total", 'direction="seized"') == 0

        # 2. the device hangs up at a: a look-alike at b must prove its identity first, and fails
        await old.stop()

        async def hung_up() -> bool:
            return (await conn.fetchrow(lease_query))["connected"] is False

        await wait_until(hung_up, 5, "a's lease saying the device hung up")
        stale_requests = old.counts["requests"]
        await lookalike.start()
        await wait_until(lambda: lookalike.counts["dropped"] == 1, 10, "the look-alike's connection closed")
        mismatch = 'event="identity_mismatch"'
        await wait_until(lambda: second.metric("headend_dialin_events", mismatch), 5, "the mismatch at b")
        assert lookalike.counts["requests"] == 1  # its meter number, nothing else
        assert await lease() == (first.proc.pid, epoch, False)
        await silent.start()  # nothing answers behind it: not proven either
        await wait_until(lambda: silent.counts["dropped"] == 1, 15, "the unproven connection closed")
        unproven = 'event="closed_unproven"'
        await wait_until(lambda: second.metric("headend_dialin_events", unproven), 5, "counted at b")
        assert await lease() == (first.proc.pid, epoch, False)
        assert await second.metric("headend_cluster_moves_total", 'direction="seized"') == 0

        # 3. the network sends the real device to b: proven, it takes the lease with the next epoch
        await new.start()
        await wait_until(lambda: held_by(second), 20, "the lease taken by the member it connected to now")
        assert (await lease())[1] == epoch + 1
        before = new.counts["requests"]
        await wait_until(lambda: new.counts["requests"] > before + 1, 6 * INTERVAL_S + 5, "reads through b")
        assert old.counts["requests"] == stale_requests

        async def lost(daemon: Daemon) -> float:
            return await daemon.metric("headend_cluster_moves_total", 'direction="lost"')

        await wait_until(lambda: lost(first), 4 * RENEW_S + 5, "a letting go")
        assert await second.metric("headend_cluster_moves_total", 'direction="seized"') == 1
        assert await first.metric("headend_cluster_channels") == 0
        assert await second.metric("headend_cluster_channels") == 1

        # 4. its connection at b goes quiet without closing; within replace_silent_after (and a
        # renewal) b's lease no longer says connected, and the device dialling a is taken there
        loop = asyncio.get_running_loop()
        new.mute()
        muted_at = loop.time()
        await wait_until(hung_up, QUIET_S + 4 * RENEW_S + 5, "b's lease saying its connection went quiet")
        await back.start()
        await wait_until(lambda: held_by(first), 20, "the lease taken by a again")
        assert (await lease())[1] == epoch + 2
        await wait_until(lambda: back.counts["requests"] > 1, 4 * INTERVAL_S + 5, "reads through a again")
        assert loop.time() - muted_at < 20  # silent_timeout is an hour
        await wait_until(lambda: lost(second), 4 * RENEW_S + 5, "b letting go")
        await wait_until(lambda: new.counts["dropped"] == 1, 5, "b closing the quiet connection")
        unheard = new.counts["requests"]
        before = back.counts["requests"]
        await wait_until(lambda: back.counts["requests"] > before + 2, 6 * INTERVAL_S + 5, "reads through a")
        assert new.counts["requests"] == unheard  # b reads it no more
        assert await second.metric("headend_cluster_channels") == 0
        assert await first.metric("headend_cluster_channels") == 1

        moves = await conn.fetch("SELECT from_owner, to_owner, epoch, reason FROM lease_moves ORDER BY id")
        assert [(r["reason"], r["epoch"]) for r in moves] == [
            ("first", epoch),
            ("seized", epoch + 1),
            ("seized", epoch + 2),
        ]
        assert [pid_of(r["to_owner"]) for r in moves] == [first.proc.pid, second.proc.pid, first.proc.pid]
    finally:
        for device in devices:
            await device.stop()
        await first.close()
        await second.close()
        await conn.close()
