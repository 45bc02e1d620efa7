"""The dial-in listener with the simulated DTU over real TCP sockets on 127.0.0.1: binding, heartbeats,
replacement, offline channels and every kind of bad input (counted, never a wrong reading)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from headend.drivers import Credentials, MeterTimeout, make_driver
from headend.transport import ChannelOffline, DialinHub, open_channel
from headend.transport import hub as hub_module
from headend.transport.identify import RegistrationFormat
from headend.transport.listener import TRANSITIONS, Inbound, Listener, ListenerSpec, StateError
from simulators import BusSpec, SimBus
from simulators.dtu import DtuFaults, DtuSpec, SimDtu
from simulators.modbus_server import ModbusBus
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(60)
GOOD = Credentials(2, "000000")
HB = b"<3HB>"
SPEC = ListenerSpec(heartbeat=HB, identify_timeout_s=2.0, silent_timeout_s=5.0)


@asynccontextmanager
async def front_end(
    spec: ListenerSpec = SPEC, unknown: str = "refuse"
) -> AsyncIterator[tuple[DialinHub, Listener]]:
    hub = DialinHub(unknown)  # type: ignore[arg-type]
    listener = await Listener(spec, hub).start()
    try:
        yield hub, listener
    finally:
        await listener.stop()


@asynccontextmanager
async def dtu(
    listener: Listener, identity: str = "DTU-0001", meters: int = 2, seed: int = 5, **options: object
) -> AsyncIterator[SimDtu]:
    bus = SimBus(BusSpec(meters=meters, seed=seed, transport="carried"))
    options = {"backoff_s": 0.05, **options}
    spec = DtuSpec(identity, "127.0.0.1", listener.port, heartbeat=HB, **options)  # type: ignore[arg-type]
    sim = await SimDtu(spec, bus).start()
    try:
        yield sim
    finally:
        await sim.stop()


def driver_for(hub: DialinHub, sim: SimDtu, index: int = 0, wait_s: float = 5.0) -> tuple[object, object]:
    channel = open_channel(f"dtu://{sim.spec.identity}?retries=2&turnaround_ms=300", hub, wait_s)
    return channel, make_driver("dlt645-2007", channel, sim.bus.meters[index].address, None, GOOD)


async def test_dtu_dials_in_registers_and_its_meters_are_read() -> None:
    async with front_end() as (hub, listener), dtu(listener, meters=3) as sim:
        channel, driver = driver_for(hub, sim, index=2)
        values = await driver.read(["energy_import_kwh", "relay"])  # type: ignore[attr-defined]
        model = sim.bus.meters[2].model
        assert values["energy_import_kwh"] == pytest.approx(model.registers.import_kwh, abs=0.02)
        assert values["relay"] == 1.0
        assert hub.online(("dtu", "DTU-0001")) and hub.counts["identified"] == 1
        assert hub.live["dtu", "DTU-0001"].peer.startswith("127.0.0.1:")
        await channel.close()  # type: ignore[attr-defined]
        assert hub.online(("dtu", "DTU-0001"))  # closing the channel leaves the device connected


async def test_heartbeats_are_stripped_even_between_two_halves_of_a_reply() -> None:
    faults = DtuFaults(heartbeat_mid_reply=1.0)
    async with front_end() as (hub, listener), dtu(listener, faults=faults, heartbeat_s=0.05) as sim:
        channel, driver = driver_for(hub, sim)
        model = sim.bus.meters[0].model
        for _ in range(5):
            values = await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]
            assert values["energy_import_kwh"] == pytest.approx(model.registers.import_kwh, abs=0.02)
        # every try of every read had a heartbeat inside its reply: none could pass unless stripped
        assert sim.counts["heartbeat_mid_reply"] >= 5
        assert hub.counts["heartbeats"] >= 5 and channel.stats.frames_in >= 5  # type: ignore[attr-defined]


async def test_heartbeat_pattern_inside_meter_data_is_left_alone() -> None:
    bus = SimBus(BusSpec(meters=1, seed=7, transport="carried"))
    address = bytes.fromhex(bus.meters[0].address)[::-1]
    pattern = b"\x68" + address + b"\x68"  # the reply's own header: inside every reply frame
    async with front_end(replace(SPEC, heartbeat=pattern)) as (hub, listener):
        sim = await SimDtu(DtuSpec("DTU-0007", "127.0.0.1", listener.port, heartbeat=pattern), bus).start()
        try:
            channel, driver = driver_for(hub, sim)
            values = await driver.read(["energy_import_kwh", "voltage_a_v"])  # type: ignore[attr-defined]
            assert values["energy_import_kwh"] == pytest.approx(
                bus.meters[0].model.registers.import_kwh, abs=0.02
            )
            assert channel.stats.retries == 0 and channel.stats.checksum_errors == 0  # type: ignore[attr-defined]
            assert hub.counts["heartbeats"] == 0
        finally:
            await sim.stop()


async def test_drop_mid_reply_is_retried_after_the_redial() -> None:
    faults = DtuFaults(drop_mid_reply=0.5)
    async with front_end() as (hub, listener), dtu(listener, faults=faults, seed=11) as sim:
        _channel, driver = driver_for(hub, sim)
        model = sim.bus.meters[0].model
        done = 0
        for _ in range(30):
            try:
                values = await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]
            except Exception:  # a dropped exchange fails this read; the next waits for the redial
                continue
            assert values["energy_import_kwh"] == pytest.approx(model.registers.import_kwh, abs=0.02)
            done += 1
        assert sim.counts["drop_mid_reply"] > 0 and sim.counts["connects"] > 1 and done > 5


async def test_newer_connection_replaces_the_older_and_the_exchange_moves_over() -> None:
    faults = DtuFaults(duplicate=0.3)
    replacing = replace(SPEC, conflict="replace")
    async with front_end(replacing) as (hub, listener), dtu(listener, faults=faults) as sim:
        _channel, driver = driver_for(hub, sim)
        await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]
        first = hub.live["dtu", "DTU-0001"]
        await wait_until(lambda: hub.counts["replaced"] == 1)
        assert first.closed and first.close_reason == "replaced"
        values = await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]
        assert values["energy_import_kwh"] > 0 and hub.live["dtu", "DTU-0001"] is not first
        await wait_until(lambda: sim.counts["superseded_closed"] == 1)


async def test_replacement_moves_the_exchange_in_flight_to_the_new_connection() -> None:
    bus = SimBus(BusSpec(meters=1, seed=3, transport="carried", turnaround_s=1.0))
    async with front_end(replace(SPEC, conflict="replace")) as (hub, listener):
        sim = await SimDtu(DtuSpec("DTU-0003", "127.0.0.1", listener.port, heartbeat=HB), bus).start()
        try:
            channel = open_channel("dtu://DTU-0003?retries=0&turnaround_ms=3000", hub, 5.0)
            driver = make_driver("dlt645-2007", channel, bus.meters[0].address, None, GOOD)
            reading = asyncio.create_task(driver.read(["energy_import_kwh"]))
            await wait_until(lambda: bus.requests[0x11] == 1)  # the request is out, the meter is thinking
            old = hub.live["dtu", "DTU-0003"]
            twin = await SimDtu(
                DtuSpec("DTU-0003", "127.0.0.1", listener.port, heartbeat=HB),
                SimBus(BusSpec(meters=1, seed=3, transport="carried")),
            ).start()
            try:
                values = await reading
                assert old.closed and hub.counts["replaced"] == 1
                assert values["energy_import_kwh"] == pytest.approx(
                    bus.meters[0].model.registers.import_kwh, abs=0.05
                )
                assert twin.bus.requests[0x11] == 1  # the retry went to the new connection
            finally:
                await twin.stop()
        finally:
            await sim.stop()


async def test_offline_channel_fails_fast_and_comes_online_when_the_device_dials_in() -> None:
    async with front_end() as (hub, listener):
        channel = open_channel("dtu://DTU-0042", hub)
        bus = SimBus(BusSpec(meters=1, seed=42, transport="carried"))
        driver = make_driver("dlt645-2007", channel, bus.meters[0].address, None, GOOD)
        with pytest.raises(ChannelOffline, match="offline"):
            await driver.read(["energy_import_kwh"])
        assert not channel.online  # type: ignore[attr-defined]
        sim = await SimDtu(DtuSpec("DTU-0042", "127.0.0.1", listener.port, heartbeat=HB), bus).start()
        try:
            await wait_until(lambda: hub.online(("dtu", "DTU-0042")))
            assert (await driver.read(["energy_import_kwh"]))["energy_import_kwh"] > 0
        finally:
            await sim.stop()
        await wait_until(lambda: not hub.online(("dtu", "DTU-0042")))


async def test_late_registration_after_heartbeats_binds() -> None:
    faults = DtuFaults(late_registration=0.3)
    async with front_end() as (hub, listener), dtu(listener, faults=faults, heartbeat_s=0.05) as sim:
        _channel, driver = driver_for(hub, sim)
        assert (await driver.read(["energy_import_kwh"]))["energy_import_kwh"] > 0  # type: ignore[attr-defined]
        assert hub.counts["heartbeats"] >= 2 and hub.counts["closed_malformed_id"] == 0


async def test_unknown_identity_is_refused_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="headend.transport.hub")
    async with front_end() as (hub, listener), dtu(listener, "DTU-STRANGER") as sim:
        await wait_until(lambda: hub.counts["refused_unknown"] >= 3)  # it keeps redialling
        assert not hub.online(("dtu", "DTU-STRANGER")) and sim.counts["dropped"] >= 2
        entry = hub.pending["dtu", "DTU-STRANGER"]
        assert entry.attempts >= 3 and not entry.held and entry.kind == "dtu"
        logged = [r for r in caplog.records if r.getMessage() == "unknown dial-in identity"]
        assert len(logged) == 1


async def test_unknown_identity_is_held_and_bound_once_adopted() -> None:
    async with front_end(unknown="hold") as (hub, listener), dtu(listener, "DTU-NEW") as sim:
        await wait_until(lambda: ("dtu", "DTU-NEW") in hub.held)
        assert hub.pending["dtu", "DTU-NEW"].held and not hub.online(("dtu", "DTU-NEW"))
        hub.inventory_loaded([("dtu", "DTU-NEW")])  # the operator adopted it into the inventory
        assert hub.online(("dtu", "DTU-NEW")) and ("dtu", "DTU-NEW") not in hub.pending
        _channel, driver = driver_for(hub, sim)
        assert (await driver.read(["energy_import_kwh"]))["energy_import_kwh"] > 0  # type: ignore[attr-defined]
        assert sim.counts["connects"] == 1


def raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def test_garbage_before_registration_is_skipped_with_a_prefix_format() -> None:
    spec = replace(SPEC, registration=RegistrationFormat(prefix=b"REG:", delimiter=b"\n"))
    async with front_end(spec) as (hub, listener):
        bus = SimBus(BusSpec(meters=1, seed=9, transport="carried"))
        dtu_spec = DtuSpec(
            "DTU-0009",
            "127.0.0.1",
            listener.port,
            registration=b"REG:DTU-0009\n",
            heartbeat=HB,
            faults=DtuFaults(garbage_before=40),
        )
        sim = await SimDtu(dtu_spec, bus).start()
        try:
            channel = open_channel("dtu://DTU-0009", hub, 5.0)
            driver = make_driver("dlt645-2007", channel, bus.meters[0].address, None, GOOD)
            assert (await driver.read(["energy_import_kwh"]))["energy_import_kwh"] > 0
        finally:
            await sim.stop()


async def test_bad_openings_are_closed_and_counted() -> None:
    spec = replace(
        SPEC, max_bytes_before_id=32, registration=RegistrationFormat(prefix=b"REG:", delimiter=b"\n")
    )
    async with front_end(spec) as (hub, listener):
        hub.expect(("dtu", "DTU-0001"))
        garbage = raw_connect(listener.port)
        garbage.sendall(bytes(range(100)))  # no prefix within the byte cap
        oversized = raw_connect(listener.port)
        oversized.sendall(b"REG:" + b"A" * 80)  # no delimiter within the id limit
        malformed = raw_connect(listener.port)
        malformed.sendall(b"REG:bad id with spaces\n")
        silent = raw_connect(listener.port)  # never identifies
        await wait_until(lambda: all(closed_by_peer(s) for s in (garbage, oversized, malformed, silent)))
        counts = hub.counts
        assert counts["closed_too_many_bytes"] == 1 and counts["closed_malformed_id"] == 2
        assert counts["closed_identify_timeout"] == 1 and not hub.live and not listener.connections
        for sock in (garbage, oversized, malformed, silent):
            sock.close()


async def test_half_open_socket_is_closed_after_the_silent_timeout() -> None:
    spec = replace(SPEC, silent_timeout_s=0.5)
    async with front_end(spec) as (hub, listener):
        hub.expect(("dtu", "DTU-0001"))
        sock = raw_connect(listener.port)
        sock.sendall(b"DTU-0001")
        await wait_until(lambda: hub.online(("dtu", "DTU-0001")))
        await wait_until(lambda: closed_by_peer(sock))  # the device went away without a FIN
        assert hub.counts["closed_silent_timeout"] == 1 and not hub.online(("dtu", "DTU-0001"))
        sock.close()


async def test_connect_flood_from_one_address_keeps_only_the_newest_identifying_connections() -> None:
    spec = replace(SPEC, max_per_address=5)
    async with front_end(spec) as (hub, listener):
        socks = [raw_connect(listener.port) for _ in range(20)]
        await wait_until(lambda: hub.counts["accepted"] + hub.counts["cap_listener"] == 20)
        await wait_until(lambda: hub.counts["closed_cap_address"] == 15)
        assert hub.counts["accepted"] == 20 and hub.counts["cap_address"] == 15
        assert len(listener.connections) == 5 and hub.counts["cap_listener"] == 0
        for sock in socks:
            sock.close()
        await wait_until(lambda: not listener.connections and not listener.identifying)


async def test_a_stray_reply_is_never_attributed_to_another_channel() -> None:
    # DTU-A heartbeats within the silent timeout: its meters' silence must not read as the DTU's (the
    # unanswered reads take about the silent timeout, and longer on a loaded machine)
    async with (
        front_end() as (hub, listener),
        dtu(listener, "DTU-A", seed=21, heartbeat_s=1.0) as a,
        dtu(listener, "DTU-B", seed=22) as b,
    ):
        channel_a, driver_a = driver_for(hub, a)
        # a meter of bus B addressed through DTU-A's channel: no such meter there, no answer
        wrong = make_driver("dlt645-2007", channel_a, b.bus.meters[0].address, None, GOOD)
        with pytest.raises(MeterTimeout):
            await wrong.read(["energy_import_kwh"])  # type: ignore[attr-defined]
        assert b.bus.requests[0x11] == 0
        assert (await driver_a.read(["energy_import_kwh"]))["energy_import_kwh"] > 0  # type: ignore[attr-defined]


async def test_a_flood_of_made_up_identities_is_refused_without_growing_the_pending_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_module, "MAX_PENDING", 2)
    async with front_end() as (hub, listener):
        socks = []
        for n in range(4):
            sock = raw_connect(listener.port)
            sock.sendall(f"FAKE-{n}".encode())
            socks.append(sock)
        await wait_until(lambda: hub.counts["identified"] == 4)
        assert len(hub.pending) == 2  # the first two to identify (connections race)
        assert hub.counts["refused_pending_full"] == 2 and hub.counts["refused_unknown"] == 2
        await wait_until(lambda: all(closed_by_peer(s) for s in socks))
        for sock in socks:
            sock.close()


async def test_a_modbus_rtu_bus_behind_a_dtu_is_read_heartbeats_mid_reply_stripped() -> None:
    bus = await ModbusBus(
        BusSpec(protocol="modbus", model="eastron_sdm120", meters=3, transport="rtu-over-tcp", seed=12)
    ).start()
    faults = DtuFaults(heartbeat_mid_reply=1.0)
    async with front_end() as (hub, listener):
        sim = await SimDtu(
            DtuSpec("DTU-MB", "127.0.0.1", listener.port, heartbeat=HB, faults=faults), bus
        ).start()
        try:
            channel = open_channel("dtu://DTU-MB?baud=9600&parity=N&retries=2", hub, 5.0)
            driver = make_driver("modbus", channel, 3, "eastron_sdm120")
            values = await driver.read(["energy_import_kwh", "voltage_a_v"])
            meter = bus.meter(3).model
            assert values["energy_import_kwh"] == pytest.approx(meter.registers.import_kwh, rel=1e-3)
            assert 200 < values["voltage_a_v"] < 260
            assert sim.counts["heartbeat_mid_reply"] >= 1 and hub.counts["heartbeats"] >= 1
        finally:
            await sim.stop()
            await bus.stop()


async def test_the_connection_owns_its_state_and_refuses_transitions_the_table_forbids() -> None:
    async with front_end(unknown="hold") as (hub, listener), dtu(listener, identity="DTU-0042") as sim:
        device = ("dtu", "DTU-0042")
        await wait_until(lambda: device in hub.held)
        inbound = hub.held[device]
        assert inbound.state == "held"
        with pytest.raises(StateError, match="held cannot become identifying"):
            inbound.move_to("identifying")
        assert inbound.state == "held"  # a refused move changes nothing
        hub.inventory_loaded([device])  # the inventory now has its channel: the hub asks for bound
        await wait_until(lambda: hub.online(device))
        assert inbound.state == "bound"
        for refused in ("held", "identifying", "bound"):
            with pytest.raises(StateError):
                inbound.move_to(refused)  # type: ignore[arg-type]
        assert inbound.state == "bound"
        await sim.stop()
        await wait_until(lambda: inbound.state == "closed")
        with pytest.raises(StateError, match="closed cannot become bound"):
            inbound.move_to("bound")
    assert TRANSITIONS["closed"] == frozenset()


async def test_a_connection_whose_device_another_cluster_member_has_is_closed_as_a_conflict() -> None:
    device = ("dtu", "DTU-0001")
    bound: list[Inbound] = []
    lost: list[tuple[str, str]] = []
    async with front_end() as (hub, listener):
        hub.expect(device)
        hub.on_bound = lambda _device, inbound: bound.append(inbound)
        hub.on_lost = lost.append
        async with dtu(listener, backoff_s=60.0) as sim:
            await wait_until(lambda: len(bound) == 1, 5, "the connection bound")
            hub.connected_elsewhere(bound[0], "host:1:aa")  # the member's claim on the lease refused
            await wait_until(lambda: sim.counts["dropped"] == 1, 5, "the connection closed")
            assert bound[0].close_reason == "conflict" and not hub.online(device)
            assert (hub.counts["conflict"], hub.conflicts[device].conflicts) == (1, 1)
            hub.connected_elsewhere(bound[0], "host:1:aa")  # no longer the live one: not counted again
            assert hub.counts["conflict"] == 1
            assert lost == []  # not a connection this member had the device on
        async with dtu(listener, backoff_s=60.0):
            await wait_until(lambda: len(bound) == 2 and hub.online(device), 5, "the device connected")
        await wait_until(lambda: lost == [device], 5, "its hang-up reported")
        assert hub.counts["conflict"] == 1
