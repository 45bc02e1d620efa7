"""A relay command whose reply goes wrong is settled by reading the relay back, and its 0x1C frame is
never sent twice for one attempt: a meter that trips and answers abnormally, a TCP bus that drops the
reply (channel retries configured), and a dial-in DTU whose connection drops mid-reply and redials
(real PostgreSQL, the simulators on 127.0.0.1, 0x1C frames counted at the simulated meters)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from headend.control.executor import execute
from headend.drivers import Credentials, make_driver
from headend.engine.ports import DriverPort
from headend.store.commands import create_command
from headend.store.feecontrol import publish_manual_approval_above
from headend.transport import open_channel
from simulators import BusSpec, SimBus, start_bus
from simulators.dtu import DtuFaults, SimDtu
from tests.dialin.test_impostors import meter_specs
from tests.dialin.test_listener import dtu, front_end
from tests.support.waiting import wait_until

NOW = datetime.now(UTC)
GOOD = Credentials(2, "000000")


async def _disconnect(conn: asyncpg.Connection, address: str, key: str) -> int:
    """A meter row for ``address`` and a pending manual disconnect of it (one person may send it: these
    tests are about the reply, not the two-person rule)."""
    await publish_manual_approval_above(conn, 1000)
    channel_id = await conn.fetchval(
        "INSERT INTO channels (name, kind, address) VALUES ($1, 'tcp', '127.0.0.1:1') RETURNING id", key
    )
    meter_id = await conn.fetchval(
        """INSERT INTO meters (protocol, address, model, channel_id, has_relay)
           VALUES ('dlt645-2007', $1, 'dlt645-generic', $2, true) RETURNING id""",
        address,
        channel_id,
    )
    return await create_command(
        conn,
        meter_id=meter_id,
        action="disconnect",
        cause="manual",
        operator="7",
        idempotency_key=key,
        now=NOW,
    )


@asynccontextmanager
async def faulty_meter(
    pg_dsn: str, faults: str
) -> AsyncIterator[tuple[asyncpg.Connection, SimBus, object, int]]:
    """One TCP meter with ``faults``, its driver over a channel that retries twice, a pending disconnect."""
    bus = await start_bus(BusSpec(transport="tcp", meters=1, seed=91, faults=faults))
    assert isinstance(bus, SimBus)
    channel = open_channel(bus.url + "?retries=2&turnaround_ms=300")
    driver = make_driver("dlt645-2007", channel, bus.meters[0].address, None, GOOD, confirm_poll_s=0.1)
    conn = await asyncpg.connect(pg_dsn)
    try:
        yield conn, bus, driver, await _disconnect(conn, bus.meters[0].address, "relay:1")
    finally:
        await conn.close()
        await channel.close()
        await bus.stop()


async def test_a_meter_that_trips_but_answers_abnormally_is_confirmed_by_the_read_back(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    async with faulty_meter(pg_dsn, "control_abnormal=#0@1+1") as (conn, bus, driver, command_id):
        assert await execute(daemon_conn, command_id, lambda _: driver) == "confirmed"
        assert bus.meters[0].model.relay.open and bus.requests[0x1C] == 1
        assert bus.fault_counts["control_abnormal"] == 1
        evidence = await conn.fetchval("SELECT evidence FROM commands WHERE id = $1", command_id)
        assert '"abnormal_reply": "meter refused: not allowed now"' in evidence
        assert '"open": true' in evidence


async def test_a_refusal_that_left_the_relay_closed_still_fails(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    async with faulty_meter(pg_dsn, "") as (_conn, bus, driver, command_id):
        bus.meters[0].model.relay.keep_power = True  # the meter refuses and does not trip
        assert await execute(daemon_conn, command_id, lambda _: driver) == "failed"
        assert not bus.meters[0].model.relay.open and bus.requests[0x1C] == 1


async def test_a_lost_reply_on_a_tcp_bus_is_read_back_not_sent_again(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    async with faulty_meter(pg_dsn, "control_silent=#0@1+1") as (conn, bus, driver, command_id):
        assert await execute(daemon_conn, command_id, lambda _: driver) == "confirmed"
        assert bus.requests[0x1C] == 1  # the channel's two retries do not repeat a relay command
        assert bus.fault_counts["control_silent"] == 1 and bus.meters[0].model.relay.open
        assert await conn.fetchval("SELECT attempts FROM commands WHERE id = $1", command_id) == 1


async def _verified_dtu_driver(hub: object, sim: SimDtu, wait_s: float) -> tuple[object, object]:
    """A driver for the DTU's meter over a dial-in channel whose connection is verified (meter number)."""
    channel = open_channel(f"dtu://{sim.spec.identity}?retries=2&turnaround_ms=300", hub, wait_s)  # type: ignore[arg-type]
    address = sim.bus.meters[0].address
    driver = make_driver(
        "dlt645-2007", channel, address, None, GOOD, confirm_timeout_s=1.0, confirm_poll_s=0.1
    )
    verified = [(meter_specs(sim.bus)[0], driver)]
    await wait_until(lambda: hub.online(("dtu", sim.spec.identity)))  # type: ignore[attr-defined]
    await DriverPort(secrets=None).verify_connection(channel, verified)  # type: ignore[arg-type]
    return channel, driver


@pytest.mark.timeout(90)
async def test_a_dtu_that_redials_mid_exchange_gets_one_frame_and_a_read_back(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    faults = DtuFaults(drop_control_reply=1)
    async with front_end() as (hub, listener), dtu(listener, meters=1, seed=7, faults=faults) as sim:
        channel, driver = await _verified_dtu_driver(hub, sim, 5.0)
        conn = await asyncpg.connect(pg_dsn)
        try:
            command_id = await _disconnect(conn, sim.bus.meters[0].address, "dtu:1")
            assert await execute(daemon_conn, command_id, lambda _: driver) == "confirmed"
            assert sim.counts["drop_control_reply"] == 1 and sim.counts["connects"] >= 2  # it redialled
            assert sim.bus.requests[0x1C] == 1 and sim.bus.meters[0].model.relay.open
        finally:
            await conn.close()
            await channel.close()  # type: ignore[attr-defined]


@pytest.mark.timeout(90)
async def test_an_unknown_outcome_is_read_back_before_anything_is_sent_again(
    pg_dsn: str, daemon_conn: asyncpg.Connection
) -> None:
    faults = DtuFaults(drop_control_reply=1)
    async with (
        front_end() as (hub, listener),
        dtu(listener, meters=1, seed=8, faults=faults, backoff_s=3.0) as sim,
    ):
        # the DTU redials 1.5-4.5 s after the drop: the 1 s read-back window closes before it
        channel, driver = await _verified_dtu_driver(hub, sim, 0.0)
        conn = await asyncpg.connect(pg_dsn)
        try:
            command_id = await _disconnect(conn, sim.bus.meters[0].address, "dtu:2")
            assert await execute(daemon_conn, command_id, lambda _: driver) == "sent"
            query = "SELECT attempts, next_attempt_at FROM commands WHERE id = $1"
            row = await conn.fetchrow(query, command_id)
            assert row["attempts"] == 1 and row["next_attempt_at"] > NOW
            await wait_until(lambda: hub.online(("dtu", sim.spec.identity)))
            later = row["next_attempt_at"] + timedelta(seconds=1)
            state = await execute(daemon_conn, command_id, lambda _: driver, now=lambda: later, due_only=True)
            assert state == "confirmed"  # read back first: the relay is open, nothing sent again
            assert sim.bus.requests[0x1C] == 1 and sim.bus.meters[0].model.relay.open
            evidence = await conn.fetchval("SELECT evidence FROM commands WHERE id = $1", command_id)
            assert '"resumed": true' in evidence
        finally:
            await conn.close()
            await channel.close()  # type: ignore[attr-defined]
