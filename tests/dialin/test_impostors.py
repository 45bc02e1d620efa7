"""Devices that dial in must prove who they are: an impostor DTU with a real one's id, idle
connections from one NAT address, source networks and TLS client certificates, over real TCP sockets
on 127.0.0.1 with the simulated DTUs (and, for the engine, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from pathlib import Path

import asyncpg
import pytest

from headend.config import ListenerConfig, ListenerTlsConfig
from headend.drivers import Credentials, make_driver
from headend.engine.engine import Engine
from headend.engine.frontend import listener_spec, tls_context
from headend.engine.model import MeterSpec
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.store.writer import ReadingWriter
from headend.transport import ChannelUnverified, open_channel
from simulators import BusSpec, SimBus
from simulators.dtu import DtuSpec, SimDtu, impostor_bus
from tests.dialin.test_daemon_dialin import config, inventory
from tests.dialin.test_listener import HB, SPEC, front_end, raw_connect
from tests.support.logins import daemon_dsn
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)
PASSWORD = "271828"
GOOD = Credentials(2, PASSWORD)
DEVICE = ("dtu", "DTU-0001")


def dtu_spec(port: int, identity: str = "DTU-0001", **options: object) -> DtuSpec:
    return DtuSpec(identity, "127.0.0.1", port, heartbeat=HB, heartbeat_s=0.2, backoff_s=0.05, **options)  # type: ignore[arg-type]


def real_bus(seed: int = 5, meters: int = 2) -> SimBus:
    return SimBus(BusSpec(meters=meters, seed=seed, transport="carried", password=PASSWORD))


def meter_specs(bus: SimBus, identities: bool = True) -> list[MeterSpec]:
    now = datetime.now(UTC)
    return [
        MeterSpec(
            i + 1, 1, "dlt645-2007", m.address, None, "", now, identity=m.address if identities else None
        )
        for i, m in enumerate(bus.meters)
    ]


async def test_an_impostor_never_displaces_a_device_that_answers(caplog: pytest.LogCaptureFixture) -> None:
    real = real_bus()
    async with front_end() as (hub, listener):
        channel = open_channel("dtu://DTU-0001?retries=1&turnaround_ms=300", hub, 5.0)
        driver = make_driver("dlt645-2007", channel, real.meters[0].address, None, GOOD)
        genuine = await SimDtu(dtu_spec(listener.port), real).start()
        fake = impostor_bus(real, seed=77)
        impostor: SimDtu | None = None
        try:
            await wait_until(lambda: hub.online(DEVICE))
            established = hub.live[DEVICE]
            impostor = await SimDtu(dtu_spec(listener.port), fake).start()
            await wait_until(lambda: hub.counts["conflict"] >= 5)  # it keeps redialling: refused every time
            for _ in range(5):
                values = await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]
                assert values["energy_import_kwh"] == pytest.approx(
                    real.meters[0].model.registers.import_kwh, abs=0.02
                )
            assert hub.live[DEVICE] is established and not established.closed  # no ping-pong
            assert hub.counts["replaced"] == 0 and hub.counts["closed_conflict"] >= 5
            assert sum(fake.requests.values()) == 0 and real.requests[0x11] >= 5
            alarms = [r for r in caplog.records if "conflict" in r.getMessage()]
            assert len(alarms) == 1  # said once a minute per device, counted every time
        finally:
            if impostor is not None:
                await impostor.stop()
            await genuine.stop()


async def test_a_silent_established_connection_is_replaced_and_a_missed_request_counts_as_silence() -> None:
    async with front_end(replace(SPEC, replace_silent_after_s=0.3)) as (hub, listener):
        hub.inventory_loaded([DEVICE])
        stale = raw_connect(listener.port)
        stale.sendall(b"DTU-0001")  # registers, then never says anything again (a half-open socket)
        await wait_until(lambda: hub.online(DEVICE))
        first = hub.live[DEVICE]
        real = real_bus()
        genuine = await SimDtu(dtu_spec(listener.port), real).start()
        try:
            await wait_until(lambda: hub.counts["replaced"] == 1 and hub.live[DEVICE] is not first)
            assert first.closed and first.close_reason == "replaced" and hub.counts["conflict"] >= 1
        finally:
            await genuine.stop()
            stale.close()

    async with front_end() as (hub, listener):  # silence allowance 120 s: only a missed request counts
        real = real_bus()
        channel = open_channel("dtu://DTU-0001?retries=0&turnaround_ms=200", hub, 5.0)
        driver = make_driver("dlt645-2007", channel, real.meters[0].address, None, GOOD)
        stale = raw_connect(listener.port)
        stale.sendall(b"DTU-0001")
        await wait_until(lambda: hub.online(DEVICE))
        first = hub.live[DEVICE]
        genuine = await SimDtu(dtu_spec(listener.port), real).start()
        try:
            await wait_until(lambda: hub.counts["conflict"] >= 1)
            assert hub.live[DEVICE] is first  # the newcomer waits: the established one answers so far
            with pytest.raises(Exception, match=r"no reply|timeout|Timeout"):
                await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]
            assert first.unanswered
            await wait_until(lambda: hub.counts["replaced"] == 1)  # its next redial takes over
            values = await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]
            assert values["energy_import_kwh"] > 0
        finally:
            await genuine.stop()
            stale.close()


async def test_no_password_reaches_an_impostor_and_it_is_closed_once_its_meters_answer_otherwise() -> None:
    real = real_bus()
    fake = impostor_bus(real, seed=77)
    port = DriverPort(secrets=None)
    async with front_end() as (hub, listener):
        channel = open_channel("dtu://DTU-0001?retries=1&turnaround_ms=300", hub, 5.0)
        driver = make_driver("dlt645-2007", channel, real.meters[0].address, None, GOOD)
        impostor = await SimDtu(dtu_spec(listener.port), fake).start()  # the real DTU is offline
        genuine: SimDtu | None = None
        try:
            await wait_until(lambda: hub.online(DEVICE))
            # unverified: the relay and clock writes are refused before a byte leaves
            with pytest.raises(ChannelUnverified, match="no password sent"):
                await driver._request(b"\x68" + bytes(15), secret=True)  # type: ignore[attr-defined]
            with pytest.raises(ChannelUnverified):
                await driver.switch("off", operator="42")  # type: ignore[attr-defined]
            with pytest.raises(ChannelUnverified):
                await driver.set_clock(broadcast=False)  # type: ignore[attr-defined]
            assert fake.requests[0x1C] == 0 and fake.requests[0x14] == 0
            assert hub.counts["secret_refused_unverified"] == 3

            drivers = [
                (m, make_driver("dlt645-2007", channel, m.address, None, GOOD)) for m in meter_specs(real)
            ]
            with pytest.raises(ChannelUnverified, match="other meters"):
                await port.verify_connection(channel, drivers)  # type: ignore[arg-type]
            assert hub.counts["identity_mismatch"] == 1
            assert sum(fake.requests.values()) == 2  # two meter numbers asked, nothing else

            await impostor.stop()
            await wait_until(lambda: not hub.online(DEVICE))
            genuine = await SimDtu(dtu_spec(listener.port), real).start()
            await wait_until(lambda: hub.online(DEVICE))
            assert port.verification_due(channel)  # type: ignore[arg-type]
            await port.verify_connection(channel, drivers)  # type: ignore[arg-type]
            assert not port.verification_due(channel)  # type: ignore[arg-type]
            assert real.requests[0x11] == 1  # one meter number sufficed
            outcome = await driver.switch("off", operator="42")  # type: ignore[attr-defined]
            assert outcome.status == "confirmed" and real.requests[0x1C] == 1
            assert fake.requests[0x1C] == 0
        finally:
            await impostor.stop()
            if genuine is not None:
                await genuine.stop()


async def test_a_connection_whose_meters_stay_silent_is_neither_used_nor_trusted() -> None:
    real = real_bus()
    port = DriverPort(secrets=None)
    async with front_end() as (hub, listener):
        channel = open_channel("dtu://DTU-0001?retries=0&turnaround_ms=200", hub, 5.0)
        drivers = [(m, make_driver("dlt645-2007", channel, m.address, None, GOOD)) for m in meter_specs(real)]
        silent = raw_connect(listener.port)
        silent.sendall(b"DTU-0001")  # registers, then answers nothing
        try:
            await wait_until(lambda: hub.online(DEVICE))
            with pytest.raises(ChannelUnverified, match="no meter answered"):
                await port.verify_connection(channel, drivers)  # type: ignore[arg-type]
            assert port.verification_due(channel) and not hub.live[DEVICE].closed  # asked again next job
            unknown = [(replace(m, identity=None), d) for m, d in drivers]
            await port.verify_connection(channel, unknown)  # type: ignore[arg-type]  # nothing to compare
            assert not hub.live[DEVICE].verified and hub.live[DEVICE].checked_at is not None
        finally:
            silent.close()


async def test_the_engine_stores_nothing_from_an_impostor_and_reads_the_real_device(
    pg_dsn: str, tmp_path: Path
) -> None:
    real = real_bus(seed=80, meters=2)
    fake = impostor_bus(real, seed=81)
    conn = await asyncpg.connect(pg_dsn)
    await import_inventory(conn, read_inventory(inventory(tmp_path / "inv.toml", {"DTU-0080": real})))
    for meter in real.meters:  # the meter numbers recorded for them (the identity check of VEE)
        await conn.execute(
            "INSERT INTO meter_identities (meter_id, identity, checked_at) "
            "SELECT id, $1, now() FROM meters WHERE address = $1",
            meter.address,
        )
    settings = config()
    from headend.engine.frontend import FrontEnd

    front = await FrontEnd(settings.listen, daemon_dsn(pg_dsn)).start()  # type: ignore[attr-defined]
    listen_port = front.listeners[0].port
    engine = Engine(
        settings,  # type: ignore[arg-type]
        daemon_dsn(pg_dsn),
        ReadingWriter(daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool"),
        DriverPort(hub=front.hub),
    )
    await engine.start()
    spec = DtuSpec("DTU-0080", "127.0.0.1", listen_port, heartbeat=b"HB", backoff_s=0.1)
    impostor = await SimDtu(spec, fake).start()
    genuine: SimDtu | None = None
    device = ("dtu", "DTU-0080")
    try:
        await wait_until(lambda: front.hub.online(device))
        ts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        engine.run_cycle(ts)
        await engine.wait_cycles()
        await engine.writer.flush()
        assert await conn.fetchval("SELECT count(*) FROM readings WHERE ts = $1", ts) == 0
        assert front.hub.counts["identity_mismatch"] >= 1
        assert fake.requests[0x11] >= 1 and set(fake.requests) == {0x11}  # meter numbers only

        await impostor.stop()
        await wait_until(lambda: not front.hub.online(device))  # the impostor's last connection is gone
        genuine = await SimDtu(spec, real).start()
        await wait_until(lambda: front.hub.online(device))
        engine.run_cycle(ts + timedelta(minutes=30))
        await engine.wait_cycles()
        await engine.writer.flush()
        rows = await conn.fetch(
            "SELECT m.address, r.value FROM readings r JOIN meters m ON m.id = r.meter_id "
            "JOIN quantities q ON q.id = r.quantity_id WHERE r.ts = $1 AND q.name = 'energy_import_kwh'",
            ts + timedelta(minutes=30),
        )
        stored = {r["address"]: r["value"] for r in rows}
        assert stored == pytest.approx(
            {m.address: m.model.registers.import_kwh for m in real.meters}, abs=0.02
        )
        assert front.hub.live[device].verified
    finally:
        await impostor.stop()
        if genuine is not None:
            await genuine.stop()
        await engine.stop()
        await front.stop()
        await conn.close()


async def test_idle_connections_from_one_nat_address_do_not_keep_the_real_dtu_out() -> None:
    async with front_end(replace(SPEC, identify_timeout_s=30.0)) as (hub, listener):
        hub.inventory_loaded([DEVICE])
        idle = [raw_connect(listener.port) for _ in range(100)]  # as many as max_per_address
        await wait_until(lambda: hub.counts["accepted"] == 100)
        real = real_bus()
        genuine = await SimDtu(dtu_spec(listener.port), real).start()
        try:
            await wait_until(lambda: hub.online(DEVICE), timeout=5.0)
            idle += [raw_connect(listener.port) for _ in range(100)]  # more while it is connected
            await wait_until(lambda: hub.counts["accepted"] == 201)
            channel = open_channel("dtu://DTU-0001?retries=1&turnaround_ms=300", hub, 0.0)
            driver = make_driver("dlt645-2007", channel, real.meters[0].address, None, GOOD)
            values = await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]
            assert values["energy_import_kwh"] > 0 and hub.online(DEVICE)
            assert hub.counts["cap_address"] >= 100 and len(listener.identifying["127.0.0.1"]) == 100
            assert genuine.counts["connects"] == 1  # never pushed out
        finally:
            await genuine.stop()
            for sock in idle:
                sock.close()


async def test_source_networks_of_the_listener_and_of_the_channel() -> None:
    outside = (ip_network("10.64.0.0/16"),)
    async with front_end(replace(SPEC, allow=outside)) as (hub, listener):
        sock = raw_connect(listener.port)
        await wait_until(lambda: hub.counts["refused_source"] == 1)
        assert not listener.connections
        sock.close()
    async with front_end(replace(SPEC, allow=(ip_network("127.0.0.0/8"),))) as (hub, listener):
        channel = open_channel("dtu://DTU-0001?allow=10.64.0.0/16", hub, 0.0)
        genuine = await SimDtu(dtu_spec(listener.port), real_bus()).start()
        try:
            await wait_until(lambda: hub.counts["refused_source"] >= 2)
            assert not hub.online(DEVICE)  # named by its id, but from a network its channel does not allow
            await channel.close()  # type: ignore[attr-defined]
            hub.inventory_loaded([DEVICE], {DEVICE: (ip_network("127.0.0.1/32"),)})
            await wait_until(lambda: hub.online(DEVICE))
        finally:
            await genuine.stop()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(tmp: Path) -> None:
    """A throwaway CA, a server certificate and client certificates for DTU-0001 and DTU-0002
    (and one from another CA), made for this test only."""
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    for ca in ("ca", "rogue"):
        _openssl("req", "-x509", *curve, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "1",
                 "-subj", f"/CN={ca}", cwd=tmp)  # fmt: skip
    for name, ca in (("server", "ca"), ("DTU-0001", "ca"), ("DTU-0002", "ca"), ("rogue-0001", "rogue")):
        cn = "DTU-0001" if name == "rogue-0001" else name
        _openssl("req", *curve,
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=tmp)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", cwd=tmp)  # fmt: skip


async def _refused(port: int, context: ssl.SSLContext) -> bool:
    """Whether a TLS client with ``context`` is turned away (handshake error or closed unanswered)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        writer.write(b"DTU-0001")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(1), 5)
        writer.close()
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    return data == b""


def _client(tmp: Path, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    context.check_hostname = False
    context.load_cert_chain(str(tmp / f"{name}.pem"), str(tmp / f"{name}.key"))
    return context


async def test_tls_listener_binds_only_the_identity_its_client_certificate_names(tmp_path: Path) -> None:
    _certificates(tmp_path)
    tls = ListenerTlsConfig(
        cert=tmp_path / "server.pem", key=tmp_path / "server.key", client_ca=tmp_path / "ca.pem"
    )
    spec = listener_spec(
        ListenerConfig(address="127.0.0.1:0", heartbeat="<3HB>", identify_timeout="2s", tls=tls)
    )
    assert spec.tls is not None
    async with front_end(spec) as (hub, listener):
        real = real_bus()
        channel = open_channel("dtu://DTU-0001?retries=1&turnaround_ms=300", hub, 5.0)
        driver = make_driver("dlt645-2007", channel, real.meters[0].address, None, GOOD)
        genuine = await SimDtu(dtu_spec(listener.port, tls=_client(tmp_path, "DTU-0001")), real).start()
        try:
            await wait_until(lambda: hub.online(DEVICE))
            values = await driver.read(["energy_import_kwh"])  # type: ignore[attr-defined]
            assert values["energy_import_kwh"] == pytest.approx(
                real.meters[0].model.registers.import_kwh, abs=0.02
            )

            # a valid certificate of another device cannot claim this one's id
            _, writer = await asyncio.open_connection(
                "127.0.0.1", listener.port, ssl=_client(tmp_path, "DTU-0002")
            )
            writer.write(b"DTU-0001")
            await writer.drain()
            await wait_until(lambda: hub.counts["closed_certificate_mismatch"] == 1)
            writer.close()
            # a certificate of another CA, and none at all, fail the handshake: nothing is accepted
            accepted = hub.counts["accepted"]
            anonymous = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
            anonymous.check_hostname = False
            for context in (_client(tmp_path, "rogue-0001"), anonymous):
                assert await _refused(listener.port, context)
            assert hub.counts["accepted"] == accepted and hub.live[DEVICE].certificate_name == "DTU-0001"
        finally:
            await genuine.stop()
    with pytest.raises(OSError):
        tls_context(
            ListenerTlsConfig(
                cert=tmp_path / "none.pem", key=tmp_path / "server.key", client_ca=tmp_path / "ca.pem"
            )
        )


def test_listener_config_refuses_a_bad_network() -> None:
    with pytest.raises(ValueError, match=r"bad network '10\.0\.0\.1/8'"):
        ListenerConfig(address="127.0.0.1:0", allow=["10.0.0.1/8"])


async def test_conflicts_are_listed_by_channels_pending(pg_dsn: str, tmp_path: Path) -> None:
    from headend.engine.frontend import FrontEnd
    from tests.dialin.test_daemon_dialin import pending_cli

    real = real_bus(seed=90, meters=1)
    conn = await asyncpg.connect(pg_dsn)
    await import_inventory(conn, read_inventory(inventory(tmp_path / "inv.toml", {"DTU-0090": real})))
    front = await FrontEnd(config().listen, daemon_dsn(pg_dsn)).start()  # type: ignore[attr-defined]
    device = ("dtu", "DTU-0090")
    front.hub.inventory_loaded([device])
    spec = DtuSpec(
        "DTU-0090", "127.0.0.1", front.listeners[0].port, heartbeat=b"HB", heartbeat_s=0.2, backoff_s=0.1
    )
    genuine = await SimDtu(spec, real).start()
    impostor: SimDtu | None = None
    try:
        await wait_until(lambda: front.hub.online(device))
        impostor = await SimDtu(spec, impostor_bus(real, seed=91)).start()
        await wait_until(lambda: front.hub.counts["conflict"] >= 2)
        await front.flush()
        result = await asyncio.to_thread(pending_cli, pg_dsn)
        assert result.returncode == 0, result.stderr
        (row,) = json.loads(result.stdout)
        assert row["identity"] == "DTU-0090" and row["status"] == "conflict" and row["conflicts"] >= 2
        assert front.hub.counts["replaced"] == 0
    finally:
        if impostor is not None:
            await impostor.stop()
        await genuine.stop()
        await front.stop()
        await conn.close()
