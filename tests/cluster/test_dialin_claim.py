"""A dial-in connection's claim on its channel's lease (migration 0075), as the daemon's login: taken
only when no other member holds the lease live with the device connected; the holder's hang-up (or a
renewal saying the device is not connected, or the lease expiring) lets the next connection take it."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from headend.inventory import import_inventory, read_inventory
from headend.store.cluster import Seized, lease_disconnected, seize_lease, take_leases
from tests.support.logins import daemon_dsn

A, B, C = "host:1:aa", "host:2:bb", "host:3:cc"
HOUR = 3600.0


async def test_a_connected_holder_keeps_the_lease_until_the_device_hangs_up(
    pg_dsn: str, tmp_path: Path
) -> None:
    inventory = tmp_path / "inv.toml"
    inventory.write_text('[[channels]]\nname = "village"\nurl = "dtu://DTU-CLAIM?baud=2400"\n')
    admin = await asyncpg.connect(pg_dsn)
    await import_inventory(admin, read_inventory(inventory))
    channel = int(await admin.fetchval("SELECT id FROM channels WHERE name = 'village'"))
    conn = await asyncpg.connect(daemon_dsn(pg_dsn))
    lease = "SELECT owner, epoch, connected FROM channel_leases WHERE channel_id = $1"
    try:
        assert await seize_lease(conn, channel, A, HOUR) == Seized(1, A)
        assert await seize_lease(conn, channel, B, HOUR) == Seized(None, A)  # an impostor at b
        assert tuple(await conn.fetchrow(lease, channel)) == (A, 1, True)

        await lease_disconnected(conn, channel, B)  # only the holder says its device hung up
        assert tuple(await conn.fetchrow(lease, channel)) == (A, 1, True)
        await lease_disconnected(conn, channel, A)
        assert tuple(await conn.fetchrow(lease, channel)) == (A, 1, False)
        assert await seize_lease(conn, channel, B, HOUR) == Seized(2, B)
        assert await seize_lease(conn, channel, B, HOUR) == Seized(2, B)  # the same member again: same epoch

        assert await take_leases(conn, [channel], B, HOUR, set()) == {channel: 2}  # renewal: not connected
        assert tuple(await conn.fetchrow(lease, channel)) == (B, 2, False)
        assert await seize_lease(conn, channel, A, HOUR) == Seized(3, A)

        assert await take_leases(conn, [channel], A, 0.0, {channel}) == {channel: 3}  # expires at once
        assert tuple(await conn.fetchrow(lease, channel)) == (A, 3, True)
        assert await seize_lease(conn, channel, C, HOUR) == Seized(4, C)  # an expired lease: not connected
        moves = await admin.fetch("SELECT to_owner, epoch, reason FROM lease_moves ORDER BY id")
        assert [tuple(m) for m in moves] == [
            (A, 1, "first"),
            (B, 2, "seized"),
            (A, 3, "seized"),
            (C, 4, "taken"),
        ]
    finally:
        await conn.close()
        await admin.close()
