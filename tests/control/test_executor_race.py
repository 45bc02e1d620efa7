"""Two executors racing over the same relay commands on one simulated bus: each command goes out once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from headend.control.executor import RelayDriver, execute
from headend.drivers import Credentials, make_driver
from headend.store.commands import create_command, transition
from headend.store.feecontrol import publish_manual_approval_above
from headend.transport import open_channel
from headend.vocabulary import SwitchOperation
from simulators import BusSpec, start_bus

METERS = 12


class QueuedRelay:
    """A meter's real driver behind a busy bus: a switch waits for the exchange in flight first
    (as ``engine.control`` queues it behind a read), the window in which a second executor looks."""

    def __init__(self, driver: RelayDriver, wait_s: float) -> None:
        self.driver = driver
        self.wait_s = wait_s

    async def switch(self, action: SwitchOperation, *, operator: str) -> object:
        await asyncio.sleep(self.wait_s)
        return await self.driver.switch(action, operator=operator)

    async def relay_state(self) -> object:
        return await self.driver.relay_state()


@pytest.mark.timeout(120)
async def test_two_executors_send_each_command_exactly_once(pg_dsn: str) -> None:
    bus = await start_bus(BusSpec(transport="tcp", meters=METERS, seed=15))
    # each executor has its own connection to the bus, as two daemons would
    channels = [open_channel(bus.url + "?retries=1&turnaround_ms=300") for _ in range(2)]
    setup, first, second = [await asyncpg.connect(pg_dsn) for _ in range(3)]
    try:
        await publish_manual_approval_above(setup, 1000)  # the race, not the two-person rule
        channel_id = await setup.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('bus1', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        drivers: list[dict[int, RelayDriver]] = [{}, {}]
        commands: list[int] = []
        now = datetime.now(UTC)
        for meter in bus.meters:
            meter_id = await setup.fetchval(
                """INSERT INTO meters (protocol, address, model, channel_id, has_relay)
                   VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, true) RETURNING id""",
                meter.address,
                channel_id,
            )
            for own, channel in zip(drivers, channels, strict=True):
                driver = make_driver("dlt645-2007", channel, meter.address, None, Credentials(2, "000000"))
                own[meter_id] = QueuedRelay(driver, 0.2)
            commands.append(
                await create_command(
                    setup,
                    meter_id=meter_id,
                    action="disconnect",
                    cause="manual",
                    operator=str(meter_id),  # one each: no operator reaches the two-person threshold
                    idempotency_key=f"race:{meter_id}",
                    now=now,
                )
            )

        async def executor(conn: asyncpg.Connection, own: dict[int, RelayDriver], order: list[int]) -> None:
            for _ in range(3):  # passes, like the daemon's service loop
                for command_id in order:
                    await execute(conn, command_id, own.__getitem__)

        await asyncio.gather(executor(first, drivers[0], commands), executor(second, drivers[1], commands))

        states = await setup.fetch("SELECT state::text AS s, attempts FROM commands ORDER BY id")
        assert [(r["s"], r["attempts"]) for r in states] == [("confirmed", 1)] * METERS
        assert bus.requests[0x1C] == METERS
        assert all(m.model.relay.open for m in bus.meters)
        sends = await setup.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'command.sent' AND entity = 'command'"
        )
        assert sends == METERS
    finally:
        for conn in (setup, first, second):
            await conn.close()
        for channel in channels:
            await channel.close()
        await bus.stop()


async def test_a_stale_compare_and_set_changes_nothing_and_a_second_send_is_refused(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        channel_id = await conn.fetchval(
            "INSERT INTO channels (name, kind, address) VALUES ('bus1', 'tcp', '127.0.0.1:1') RETURNING id"
        )
        meter_id = await conn.fetchval(
            """INSERT INTO meters (protocol, address, model, channel_id, has_relay)
               VALUES ('dlt645-2007', '000000000001', 'dlt645-generic', $1, true) RETURNING id""",
            channel_id,
        )
        cid = await create_command(
            conn,
            meter_id=meter_id,
            action="disconnect",
            cause="manual",
            operator="7",
            idempotency_key="cas:1",
            now=datetime.now(UTC),
        )
        assert await transition(conn, cid, "pending", "sent", actor="executor", attempts_delta=1)
        # a second executor that read "pending" before: its compare-and-set finds "sent" and does nothing
        assert not await transition(conn, cid, "pending", "sent", actor="executor", attempts_delta=1)
        # sent -> sent with another attempt, by any path, is refused by the database
        with pytest.raises(asyncpg.PostgresError, match="attempt is counted only"):
            await conn.execute(
                "UPDATE commands SET state = 'sent', attempts = attempts + 1 WHERE id = $1", cid
            )
        assert await conn.fetchval("SELECT attempts FROM commands WHERE id = $1", cid) == 1
    finally:
        await conn.close()
