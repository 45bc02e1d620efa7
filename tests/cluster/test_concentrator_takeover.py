"""Dial-in take-over of a Q/GDW 1376.1 concentrator (issue 26): it logs in to whichever of two
``headend run`` cluster members its network sends it to. While the member holding its channel has it
connected, an impostor's login with its address at the other member is a conflict there. Once the
device has no connection anywhere, a login with its address must prove it before its member claims
the lease: its archive (AFN 0A F10, no PW) must list the inventory's meters at their Pn and port. An
impostor whose archive lists other meters is closed and the lease stays where it was, with its epoch;
the real concentrator logging in to the other member is proven over the connection it logged in on,
takes the lease with the next epoch and is read there on that same connection. Who reads is counted
at the simulated concentrators."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from simulators.concentrator import ConcentratorSpec, SimConcentrator
from tests.cluster.test_dialin_takeover import INTERVAL_S, RENEW_S, start_member
from tests.concentrator.support import ADDRESS
from tests.support.daemons import Daemon, free_port
from tests.support.operators import import_inventory_cli
from tests.support.waiting import wait_until

READ_AFN = "afn_0C"  # the energy readings (class 1 data)
ARCHIVE_AFN = "afn_0A"  # the archive the check reads


CONCENTRATOR_LISTENER = 'kind = "gdw1376"\nreplace_silent_after = "3s"\n'


def concentrator(port: int, seed: int) -> SimConcentrator:
    """The terminal ``ADDRESS`` logging in to ``port``; ``seed`` decides the meters in its archive (a
    long redial: only the test moves it)."""
    spec = ConcentratorSpec(
        port=port, address=ADDRESS, meters=2, latency_ms=10, heartbeat_s=0.5, seed=seed, redial_s=60
    )
    return SimConcentrator(spec)


def pid_of(member: str) -> int:
    return int(member.split(":")[-2])


@pytest.mark.long(seconds=30)
async def test_a_concentrator_proves_its_archive_before_its_login_moves_the_lease(
    pg_dsn: str, tmp_path: Path
) -> None:
    ports = {"a": free_port(), "b": free_port()}
    real = concentrator(ports["a"], seed=1)
    impostor = concentrator(ports["b"], seed=9)  # the same address, other meters
    lookalike = concentrator(ports["b"], seed=9)
    moved = concentrator(ports["b"], seed=1)  # the real terminal, sent to b by its network
    assert {r.address for r in real.pool.archive.values()}.isdisjoint(
        r.address for r in impostor.pool.archive.values()
    )
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        f'[[channels]]\nname = "conc"\nurl = "gdw1376://{ADDRESS}"\n'
        + "".join(
            f'[[meters]]\nchannel = "conc"\nprotocol = "dlt645-2007"\naddress = "{r.address}"\n'
            f'model = "dlt645-generic"\nport = {r.port}\npn = {r.pn}\n'
            for r in real.pool.archive.values()
        )
    )
    assert import_inventory_cli(pg_dsn, inventory).returncode == 0
    conn = await asyncpg.connect(pg_dsn)
    first = await start_member("a", pg_dsn, tmp_path, ports["a"], CONCENTRATOR_LISTENER)
    second = await start_member("b", pg_dsn, tmp_path, ports["b"], CONCENTRATOR_LISTENER)
    devices = (real, impostor, lookalike, moved)
    lease_query = "SELECT owner, epoch, connected FROM channel_leases"

    async def lease() -> tuple[int, int, bool]:
        row = await conn.fetchrow(lease_query)
        return pid_of(row["owner"]), row["epoch"], row["connected"]

    async def held_by(daemon: Daemon) -> bool:
        row = await conn.fetchrow(lease_query)
        return row is not None and pid_of(row["owner"]) == daemon.proc.pid

    async def event(daemon: Daemon, name: str) -> float:
        return await daemon.metric("headend_dialin_events", f'event="{name}"')

    try:
        await first.wait_logged("engine started", 30)
        await second.wait_logged("engine started", 30)
        await real.start()
        await wait_until(lambda: held_by(first), 20, "the lease taken by the member it logged in to")
        await wait_until(lambda: real.counts[READ_AFN] > 1, 20, "readings through a")
        epoch = (await lease())[1]
        assert await lease() == (first.proc.pid, epoch, True)

        # 1. connected and answering at a: an impostor's login at b is a conflict there
        await impostor.start()
        await wait_until(lambda: impostor.counts["redials"] == 1, 10, "the impostor's connection closed")
        await wait_until(lambda: event(second, "conflict"), 5, "the conflict counted at b")
        before = real.counts[READ_AFN]
        await wait_until(lambda: real.counts[READ_AFN] > before + 1, 4 * INTERVAL_S + 5, "reads through a")
        assert await lease() == (first.proc.pid, epoch, True)
        assert impostor.requests_served == 0

        # 2. the real one hangs up at a: a login at b must prove itself first; the impostor's archive fails
        await real.stop()

        async def hung_up() -> bool:
            return (await conn.fetchrow(lease_query))["connected"] is False

        await wait_until(hung_up, 5, "a's lease saying the concentrator hung up")
        await lookalike.start()
        await wait_until(lambda: lookalike.counts["redials"] == 1, 15, "the impostor's login closed")
        await wait_until(lambda: event(second, "identity_mismatch"), 5, "the mismatch counted at b")
        assert await lease() == (first.proc.pid, epoch, False)
        assert set(lookalike.counts) & {"afn_04", "afn_05", "afn_10", READ_AFN} == set()
        assert lookalike.counts[ARCHIVE_AFN] >= 1
        assert await second.metric("headend_cluster_moves_total", 'direction="seized"') == 0

        # 3. the real one logs in at b: proven on its connection there, it takes the lease and is read
        await moved.start()
        await wait_until(lambda: held_by(second), 20, "the lease taken by b")
        assert (await lease())[:2] == (second.proc.pid, epoch + 1)
        await wait_until(lambda: moved.counts[READ_AFN] > 1, 6 * INTERVAL_S + 5, "readings through b")
        assert moved.counts["connections"] == 1 and moved.counts["redials"] == 0  # on its first login
        assert moved.counts["logins"] == 1
        assert await second.metric("headend_cluster_moves_total", 'direction="seized"') == 1
        await wait_until(
            lambda: first.metric("headend_cluster_moves_total", 'direction="lost"'), 4 * RENEW_S + 5, "a"
        )
        moves = await conn.fetch("SELECT to_owner, epoch, reason FROM lease_moves ORDER BY id")
        assert [(pid_of(r["to_owner"]), r["epoch"], r["reason"]) for r in moves] == [
            (first.proc.pid, epoch, "first"),
            (second.proc.pid, epoch + 1, "seized"),
        ]
    finally:
        for device in devices:
            await device.stop()
        await first.close()
        await second.close()
        await conn.close()
