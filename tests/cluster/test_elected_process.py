"""The services that run once (billing, VEE, fee-control automation, upkeep) follow the ``services``
lease between two real ``headend run`` cluster members: a member frozen (SIGSTOP) past the lease loses
the election to the other (next epoch) and, woken (SIGCONT), stands down; a member killed (kill -9)
is replaced within the bound. What a woken ex-leader could still write is refused by the database
(tests/cluster/test_elected_fence.py)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg

from tests.support.daemons import Daemon, free_port
from tests.support.waiting import wait_until

RENEW_S = 0.5
LEASE_S = 2.0
BOUND_S = LEASE_S + 2 * RENEW_S + 2.0  # the lease runs out, the next renewal of the survivor takes it


async def start_member(name: str, dsn: str, tmp_path: Path) -> Daemon:
    metrics_port = free_port()
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{tmp_path / f"spool-{name}"}"\n'
        '[polling]\ninterval = "1h"\ninventory_reload = "1h"\n'
        "[backfill]\nenabled = false\n[clock]\nenabled = false\n[events]\nenabled = false\n"
        '[engine]\nservices = ["headend.billing.service:run"]\n'
        f'[cluster]\nenabled = true\nrenew = "{RENEW_S}s"\nlease = "{LEASE_S}s"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )
    return await Daemon.start(config, tmp_path / f"state-{name}", metrics_port)


def pid_of(member: str) -> int:
    return int(member.split(":")[-2])


async def test_the_services_move_to_the_other_member_when_the_elected_one_freezes_or_dies(
    pg_dsn: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    first = await start_member("a", pg_dsn, tmp_path)
    await first.wait_logged("cluster services elected here", 30)
    second = await start_member("b", pg_dsn, tmp_path)
    query = "SELECT owner, epoch FROM service_leases WHERE name = 'services'"

    async def elected(daemon: Daemon) -> bool:
        lease = await conn.fetchrow(query)
        return lease is not None and pid_of(lease["owner"]) == daemon.proc.pid

    try:
        await second.wait_logged("engine started", 30)
        assert await elected(first) and (await conn.fetchrow(query))["epoch"] == 1
        assert await first.metric("headend_cluster_elected") == 1
        assert await second.metric("headend_cluster_elected") == 0
        # frozen past its lease: the other member is elected with the next epoch
        first.proc.send_signal(signal.SIGSTOP)
        await wait_until(lambda: elected(second), BOUND_S + 5, "the services taken by the other member")
        assert (await conn.fetchrow(query))["epoch"] == 2
        first.proc.send_signal(signal.SIGCONT)  # woken: it stands down at its next renewal
        await first.wait_logged("cluster services elsewhere", 10)
        assert await first.metric("headend_cluster_elected") == 0
        assert await second.metric("headend_cluster_elected") == 1
        assert await elected(second)
        # kill -9 the elected member: the survivor takes the services within the bound
        second.kill()
        await second.proc.wait()
        killed_at = asyncio.get_running_loop().time()
        await wait_until(lambda: elected(first), BOUND_S + 5, "the services taken by the survivor")
        assert asyncio.get_running_loop().time() - killed_at <= BOUND_S
        assert (await conn.fetchrow(query))["epoch"] == 3
        await first.wait_logged("cluster services elected here", 5, count=2)
    finally:
        await first.close()
        await second.close()
        await conn.close()
