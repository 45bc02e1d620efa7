"""A renewal does not wait for a lease that another member's transaction holds locked (migration
0078): a member frozen inside a fenced write keeps the lease it checked locked for share until it
wakes, and the other member's renewal, which takes that lease and its own in one statement, used to
wait with it (and give up its own channels after half a lease). Now the locked lease and the locked
services' lease are skipped, the member's other leases are taken at once, and the skipped ones are
taken at the first renewal after the lock is gone, with the next epoch. Such a transaction is bounded
(migration 0085): idle for its holder's lease (a frozen member), the server ends its session and rolls
it back, and the lease moves at the next renewal."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from headend.store.cluster import check_write_fence, renew_member, take_leases, take_service
from tests.support.logins import daemon_dsn
from tests.support.waiting import wait_until

FROZEN, OTHER = "fep-1:101:aa", "fep-2:202:bb"


async def test_a_renewal_skips_the_leases_a_frozen_members_transaction_holds_locked(pg_dsn: str) -> None:
    owner = await asyncpg.connect(pg_dsn)
    frozen = await asyncpg.connect(daemon_dsn(pg_dsn))
    other = await asyncpg.connect(daemon_dsn(pg_dsn))
    try:
        locked, free = [
            await owner.fetchval(
                "INSERT INTO channels (name, kind, address) VALUES ($1, 'tcp', $2) RETURNING id",
                name,
                address,
            )
            for name, address in (("locked", "127.0.0.1:9"), ("free", "127.0.0.1:10"))
        ]
        meter = await owner.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id)"
            " VALUES ('dlt645-2007', '000000000001', 'dlt645-generic', $1) RETURNING id",
            locked,
        )
        await renew_member(frozen, FROZEN, "fep-1", 101, 30)  # its fenced transactions may idle 30 s
        assert await take_leases(frozen, [locked], FROZEN, 0.5, set()) == {locked: 1}
        assert await take_service(frozen, FROZEN, 0.5) == 1

        # the frozen member's fenced write: the channel's fence passed, its transaction never ends;
        # an elected service's fence (service_lease_fence) holds the services' lease the same way
        fenced = frozen.transaction()
        await fenced.start()
        await check_write_fence(frozen, meter, FROZEN, 1)
        elected = owner.transaction()
        await elected.start()
        await owner.execute("SELECT 1 FROM service_leases WHERE name = 'services' FOR SHARE")
        await wait_until(
            lambda: other.fetchval(
                "SELECT bool_and(expires_at <= clock_timestamp()) FROM ("
                " SELECT expires_at FROM channel_leases UNION ALL SELECT expires_at FROM service_leases) e"
            ),
            10,
            "the frozen member's leases to expire",
        )

        async with asyncio.timeout(5):  # before migration 0078 both waited for the frozen transaction
            assert await take_leases(other, [locked, free], OTHER, 30, set()) == {free: 1}
            assert await take_service(other, OTHER, 30) is None
        assert (
            await owner.fetchval("SELECT owner FROM channel_leases WHERE channel_id = $1", locked) == FROZEN
        )

        await fenced.commit()  # woken: its write was the only one under epoch 1
        await elected.commit()
        async with asyncio.timeout(5):
            assert await take_leases(other, [locked, free], OTHER, 30, set()) == {locked: 2, free: 1}
            assert await take_service(other, OTHER, 30) == 2
        assert await take_leases(frozen, [locked], FROZEN, 0.5, set()) == {}
        assert await take_service(frozen, FROZEN, 0.5) is None
    finally:
        for conn in (frozen, other, owner):
            await conn.close()


async def test_a_fenced_transaction_idle_for_its_holders_lease_loses_its_session(pg_dsn: str) -> None:
    owner = await asyncpg.connect(pg_dsn)
    frozen = await asyncpg.connect(daemon_dsn(pg_dsn))
    other = await asyncpg.connect(daemon_dsn(pg_dsn))
    try:
        channel = await owner.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('c', 'tcp', '127.0.0.1:9') RETURNING id"
        )
        meter = await owner.fetchval(
            "INSERT INTO meters (protocol, address, model, channel_id)"
            " VALUES ('dlt645-2007', '000000000001', 'dlt645-generic', $1) RETURNING id",
            channel,
        )
        await renew_member(frozen, FROZEN, "fep-1", 101, 1.0)  # a member whose lease is 1 s
        assert await take_leases(frozen, [channel], FROZEN, 1.0, set()) == {channel: 1}
        fenced = frozen.transaction()
        await fenced.start()
        await check_write_fence(frozen, meter, FROZEN, 1)  # passed: the lease locked, then nothing more
        assert await frozen.fetchval("SHOW idle_in_transaction_session_timeout") == "1s"
        pid = frozen.get_server_pid()
        await wait_until(
            lambda: owner.fetchval("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", pid),
            10,
            "the server ending the idle fenced transaction's session",
        )
        assert await take_leases(other, [channel], OTHER, 30, set()) == {channel: 2}
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
            await fenced.commit()  # woken: its write is refused
        async with other.transaction():  # a lower timeout a session has is kept
            await other.execute("SET LOCAL idle_in_transaction_session_timeout = 200")
            await check_write_fence(other, meter, OTHER, 2)
            assert await other.fetchval("SHOW idle_in_transaction_session_timeout") == "200ms"
        async with other.transaction():  # and the bound ends with the transaction
            await check_write_fence(other, meter, OTHER, 2)  # no membership: the 30 s its lease has left
            setting = "SELECT current_setting('idle_in_transaction_session_timeout')::interval"
            bound = await other.fetchval(setting)
            assert timedelta(seconds=25) < bound <= timedelta(seconds=30)
        assert await other.fetchval("SHOW idle_in_transaction_session_timeout") == "0"
    finally:
        for conn in (frozen, other, owner):
            await conn.close()
