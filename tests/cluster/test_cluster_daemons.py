"""Three ``headend run`` processes with ``[cluster] enabled`` on one database and simulated buses:
which daemon talks to which bus is counted at the sockets (the process holding each connection),
not taken from the daemons' own report."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from headend.engine.leases import assignment
from simulators import BusSpec, SimBus, start_bus
from tests.support import cli
from tests.support.daemons import CountingRelay, Daemon, free_port
from tests.support.operators import import_inventory_cli
from tests.support.waiting import wait_until

BUSES = 6
RENEW_S = 0.5
LEASE_S = 3.0
INTERVAL_S = 2.0  # [polling] interval: every bus is read this often
TAKEOVER_S = LEASE_S + 2 * RENEW_S + 2 * INTERVAL_S + 3.0  # lease runs out, a renewal takes it, a cycle reads


@dataclass
class Fleet:
    buses: list[SimBus]
    relays: dict[str, CountingRelay]  # by channel name


@pytest.fixture
async def fleet(pg_dsn: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    buses, relays, lines = [], {}, []
    for n in range(BUSES):
        bus = await start_bus(BusSpec(meters=2, seed=2600 + n))
        host, port = bus.url.removeprefix("tcp://").rsplit(":", 1)
        relay = CountingRelay(host, int(port))
        await relay.start()
        buses.append(bus)
        relays[f"bus-{n}"] = relay
        lines += ["[[channels]]", f'name = "bus-{n}"', f'url = "{relay.url}"', ""]
        for meter in bus.meters:
            lines += ["[[meters]]", f'channel = "bus-{n}"', 'protocol = "dlt645-2007"']
            lines += [f'address = "{meter.address}"', 'model = "dlt645-generic"', ""]
    (tmp_path / "inv.toml").write_text("\n".join(lines))
    imported = import_inventory_cli(pg_dsn, tmp_path / "inv.toml")
    assert imported.returncode == 0, imported.stderr
    try:
        yield Fleet(buses, relays)
    finally:
        for relay in relays.values():
            await relay.stop()
        for bus in buses:
            await bus.stop()


async def start_member(name: str, dsn: str, tmp_path: Path) -> Daemon:
    metrics_port = free_port()
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[database]\ndsn = "{dsn}"\nspool_dir = "{tmp_path / f"spool-{name}"}"\n'
        f'[polling]\ninterval = "{INTERVAL_S}s"\noffset = "0s"\ninventory_reload = "1h"\n'
        '[read_plans.default]\nquantities = ["energy_import_kwh"]\n'
        "[backfill]\nenabled = false\n[clock]\nenabled = false\n[events]\nenabled = false\n"
        '[timeouts]\ninitial = "1s"\nmaximum = "2s"\n'
        f'[cluster]\nenabled = true\nrenew = "{RENEW_S}s"\nlease = "{LEASE_S}s"\n'
        f'[metrics]\nport = {metrics_port}\n[logging]\nformat = "json"\n'
    )
    return await Daemon.start(config, tmp_path / f"state-{name}", metrics_port)


def pid_of(member: str) -> int:
    """A member id is host:pid:token."""
    return int(member.split(":")[-2])


async def settled(conn: asyncpg.Connection, daemons: list[Daemon]) -> dict[str, tuple[int, int]] | None:
    """{channel: (owner pid, epoch)} once every channel is leased to the daemon rendezvous hashing
    gives it among exactly ``daemons``; None before."""
    query = "SELECT member FROM cluster_members WHERE expires_at > clock_timestamp()"
    members = [r["member"] for r in await conn.fetch(query)]
    if sorted(pid_of(m) for m in members) != sorted(d.proc.pid for d in daemons):
        return None
    leases = await conn.fetch(
        """SELECT c.id, c.name, l.owner, l.epoch FROM channels c
           LEFT JOIN channel_leases l ON l.channel_id = c.id AND l.expires_at > clock_timestamp()"""
    )
    owners = {r["id"]: r["owner"] for r in leases if r["owner"] is not None}
    given = assignment([r["id"] for r in leases], members, owners)
    if any(r["owner"] is None or r["owner"] != given[r["id"]] for r in leases):
        return None
    return {r["name"]: (pid_of(r["owner"]), r["epoch"]) for r in leases}


async def wait_settled(
    conn: asyncpg.Connection, daemons: list[Daemon], timeout: float = 30
) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}

    async def done() -> bool:
        found.update(await settled(conn, daemons) or {})
        return bool(found) and await settled(conn, daemons) == found

    await wait_until(done, timeout, "every channel leased to its rendezvous owner")
    return found


def talkers_since(fleet: Fleet, mark: dict[str, dict[int | None, int]]) -> dict[str, set[int | None]]:
    """The processes that sent requests to each bus since ``mark``."""
    return {
        name: {pid for pid, sent in relay.sent.items() if sent > mark[name].get(pid, 0)}
        for name, relay in fleet.relays.items()
    }


@pytest.mark.long(seconds=30)
async def test_daemons_share_the_buses_a_joiner_takes_its_share_a_killed_ones_buses_are_taken_over(
    pg_dsn: str, tmp_path: Path, fleet: Fleet
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    first = await start_member("a", pg_dsn, tmp_path)
    daemons = [first]
    try:
        alone = await wait_settled(conn, [first])
        assert {pid for pid, _ in alone.values()} == {first.proc.pid}
        # a second daemon joins: only the channels rendezvous hashing gives it move, each to it
        second = await start_member("b", pg_dsn, tmp_path)
        daemons.append(second)
        shared = await wait_settled(conn, daemons)
        moved = {name for name in shared if shared[name][0] != alone[name][0]}
        assert all(shared[name][0] == second.proc.pid for name in moved)
        assert 0 < len(moved) <= math.ceil(BUSES / 2) + 1
        assert all(shared[name] == alone[name] for name in set(shared) - moved)  # same owner, same epoch
        assert all(shared[name][1] == alone[name][1] + 1 for name in moved)
        # a third joins: again only its share moves, all to it
        third = await start_member("c", pg_dsn, tmp_path)
        daemons.append(third)
        before, shared = shared, await wait_settled(conn, daemons)
        moved = {name for name in shared if shared[name][0] != before[name][0]}
        assert all(shared[name] == (third.proc.pid, before[name][1] + 1) for name in moved)
        assert 0 < len(moved) <= math.ceil(BUSES / 3) + 1
        assert all(shared[name] == before[name] for name in set(shared) - moved)
        # every bus is read by exactly one daemon, its lease holder (counted at the sockets)
        mark = {name: dict(relay.sent) for name, relay in fleet.relays.items()}

        for _ in range(3):  # three more reads of every bus by its owner: a second reader would show
            since = {name: dict(relay.sent) for name, relay in fleet.relays.items()}

            async def every_bus_read(since: dict[str, dict[int | None, int]] = since) -> bool:
                return all(
                    relay.sent.get(shared[name][0], 0) > since[name].get(shared[name][0], 0)
                    for name, relay in fleet.relays.items()
                )

            await wait_until(every_bus_read, 3 * INTERVAL_S + 5, "a read of every bus by its owner")
        talkers = talkers_since(fleet, mark)
        assert talkers == {name: {shared[name][0]} for name in shared}
        # kill -9 the first daemon: the others take its channels (next epoch) and read them in time
        orphaned = {name for name, (pid, _) in shared.items() if pid == first.proc.pid}
        assert orphaned
        first.kill()
        await first.proc.wait()
        killed_at = asyncio.get_running_loop().time()
        mark = {name: dict(relay.sent) for name, relay in fleet.relays.items()}
        survivors = [second, third]
        after = await wait_settled(conn, survivors, TAKEOVER_S)

        async def orphans_read() -> bool:
            return all(
                fleet.relays[name].sent.get(after[name][0], 0) > mark[name].get(after[name][0], 0)
                for name in orphaned
            )

        await wait_until(orphans_read, TAKEOVER_S, "the killed daemon's buses read by the survivors")
        took = asyncio.get_running_loop().time() - killed_at
        assert took <= TAKEOVER_S
        assert all(after[name][1] == shared[name][1] + 1 for name in orphaned)
        assert all(after[name] == shared[name] for name in set(shared) - orphaned)
        # what an operator sees: the survivors hold every channel, the killed daemon is not alive
        shown = await cli.headend_async("cluster", "status", "--json", "--soon", "1", "--dsn", pg_dsn)
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)
        members = {m["pid"]: (m["alive"], m["channels"]) for m in status["members"]}
        held = {d.proc.pid: sum(1 for pid, _ in after.values() if pid == d.proc.pid) for d in survivors}
        assert members == {first.proc.pid: (False, 0), **{pid: (True, n) for pid, n in held.items()}}
        assert sum(held.values()) == BUSES and max(held.values()) <= math.ceil(BUSES / 2)
        assert sorted(row["channel"] for row in status["leases"]) == sorted(fleet.relays)
        assert status["expiring"] == []  # renewed every RENEW_S, each runs LEASE_S: never within 1 s
    finally:
        for daemon in daemons:
            await daemon.close()
        await conn.close()
