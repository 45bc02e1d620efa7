"""Q/GDW 1376.1 concentrators on the shared dial-in listener (kind ``gdw1376``): identified by their
login frame, bound by A1+A2, replaced by a newer login, refused when unknown, and read by the engine
through the real listener, hub and driver port."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from headend.concentrators.service import run as concentrator_duties
from headend.drivers.gdw1376_terminal import read_archive
from headend.engine.engine import Engine
from headend.engine.ports import DriverPort
from headend.inventory import import_inventory, read_inventory
from headend.store.writer import ReadingWriter
from headend.transport import DialinHub, parse_channel_url
from headend.transport.concentrator_dialin import DialinConcentratorLink
from headend.transport.identify import IdentifyError, LoginIdentifier
from headend.transport.listener import Listener, ListenerSpec
from protocols.gdw1376 import HEARTBEAT, LOGIN, Address, link_test
from simulators.concentrator import ConcentratorSpec, SimConcentrator
from tests.concentrator.support import ADDRESS, engine_config, inventory_toml
from tests.support.engine import engine_for
from tests.support.logins import daemon_dsn
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

DEVICE = ("gdw1376", ADDRESS)
ENERGY_SQL = (
    "SELECT m.address, r.ts, r.value FROM readings r JOIN meters m ON m.id = r.meter_id"
    " JOIN quantities q ON q.id = r.quantity_id WHERE q.name = $1 ORDER BY m.address, r.ts"
)


def test_the_login_frame_names_the_terminal_by_a1_a2() -> None:
    login = link_test(Address.parse(ADDRESS), 3, LOGIN)
    identifier = LoginIdentifier()
    found = identifier.identify(b"\x00noise\xfe\xfe" + login + b"\x68rest")
    assert found is not None and found.identity == ADDRESS
    assert found.consumed == len(b"\x00noise\xfe\xfe" + login)  # the bytes after the login are not used
    assert identifier.identify(login[:-3]) is None  # more bytes needed
    with pytest.raises(IdentifyError, match="not a login"):
        identifier.identify(link_test(Address.parse(ADDRESS), 3, HEARTBEAT))


async def _listening(hub: DialinHub) -> Listener:
    return await Listener(ListenerSpec(port=0, kind="gdw1376", silent_timeout_s=30), hub).start()


async def test_engine_reads_a_concentrator_bound_by_login_through_the_listener(
    pg_dsn: str, tmp_path: Path
) -> None:
    hub = DialinHub()
    listener = await _listening(hub)
    spec = ConcentratorSpec(
        port=listener.port, address=ADDRESS, meters=4, latency_ms=20, redial_s=60, login_timeout_s=5
    )
    conn = await asyncpg.connect(pg_dsn)
    engine: Engine | None = None
    try:
        sim = SimConcentrator(spec)
        inventory = inventory_toml(tmp_path / "inv.toml", f"gdw1376://{ADDRESS}", sim)
        await import_inventory(conn, read_inventory(inventory))
        config = engine_config(["energy_import_kwh", "voltage_a_v"])
        engine = engine_for(config, pg_dsn, tmp_path, DriverPort(hub=hub))
        await engine.start()  # the inventory's gdw1376:// channel: the terminal is expected
        async with sim:  # dials in now

            async def bound() -> bool:
                return hub.online(DEVICE) and sim.logged_in.is_set()

            await wait_until(bound, 20, "the concentrator's login bound and confirmed")
            ts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            engine.run_cycle(ts)
            await engine.wait_cycles()
            await engine.writer.flush()
            energy = await conn.fetch(ENERGY_SQL, "energy_import_kwh")
            voltage = await conn.fetch(ENERGY_SQL, "voltage_a_v")
            collected = {address: reading.total for address, reading in sim.pool.collected.items()}
            assert {r["address"]: r["value"] for r in energy} == pytest.approx(collected)
            assert len(voltage) == 4 and all(r["ts"] == ts for r in energy + voltage)
            # one batched F129 (energy) and one batched F25 (voltage) for all four meters
            assert sim.counts["afn_0C"] == 2 and sim.counts["login_failures"] == 0

            # a second login of the connected terminal while it answers is a conflict: the newcomer
            # is closed unconfirmed, the established connection keeps getting the requests
            async with SimConcentrator(replace(spec, redial_s=0.2)) as second:

                async def conflicted() -> bool:
                    return hub.counts["conflict"] >= 2 and hub.counts["closed_conflict"] >= 2

                await wait_until(conflicted, 20, "the second login to be refused twice")
                earlier = ts - timedelta(hours=1)
                engine.run_cycle(earlier)
                await engine.wait_cycles()
                await engine.writer.flush()
                # the second cycle's F129 and F25 went to the established connection
                assert sim.counts["afn_0C"] == 4 and second.counts["afn_0C"] == 0
                assert not second.logged_in.is_set() and hub.counts["replaced"] == 0
                again = await conn.fetch(ENERGY_SQL, "energy_import_kwh")
                assert len([r for r in again if r["ts"] == earlier]) == 4

            # an unknown terminal is refused (counted, listed as pending), never confirmed
            stranger_key = Address.parse("0314-7").key
            async with SimConcentrator(replace(spec, address=stranger_key, redial_s=0.2)) as stranger:

                async def refused() -> bool:
                    return hub.counts["refused_unknown"] >= 1 and ("gdw1376", stranger_key) in hub.pending

                await wait_until(refused, 20, "the unknown terminal to be refused")
                assert not stranger.logged_in.is_set()
    finally:
        if engine is not None:
            await engine.stop()
        await listener.stop()
        await conn.close()


async def test_a_dial_in_concentrator_that_is_not_connected_is_offline_not_a_meter_failure(
    pg_dsn: str, tmp_path: Path
) -> None:
    hub = DialinHub()
    listener = await _listening(hub)
    spec = ConcentratorSpec(port=listener.port, address=ADDRESS, meters=2, latency_ms=20)
    sim = SimConcentrator(spec)  # never started: only its meters are used for the inventory
    conn = await asyncpg.connect(pg_dsn)
    try:
        await import_inventory(
            conn, read_inventory(inventory_toml(tmp_path / "inv.toml", f"gdw1376://{ADDRESS}", sim))
        )
        writer = ReadingWriter(daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool")
        engine = Engine(
            engine_config(["energy_import_kwh"]),
            daemon_dsn(pg_dsn),
            writer,
            DriverPort(hub=hub),
            duties=[concentrator_duties],
        )
        await engine.start()
        try:
            started = asyncio.get_running_loop().time()
            engine.run_cycle(datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
            await engine.wait_cycles()
            elapsed = asyncio.get_running_loop().time() - started
            offline = engine.metrics.registry.get_sample_value(
                "headend_offline_jobs_total", {"channel": "conc-1", "kind": "read"}
            )
            meter_ids = [r["id"] for r in await conn.fetch("SELECT id FROM meters")]
            failures = [engine.health.of(meter_id).failures for meter_id in meter_ids]
        finally:
            await engine.stop()
    finally:
        await listener.stop()
        await conn.close()
    assert offline == 2 and elapsed < 5  # failed fast as offline, both meters, no timeouts waited out
    assert failures == [0, 0]  # not the meters' failure


async def test_a_bound_or_held_concentrator_no_link_has_taken_yet_gets_its_heartbeats_confirmed() -> None:
    """Between its login and the channel's first request (or while held for an operator), nobody else
    answers the concentrator: the listener confirms its heartbeats so it neither drops the connection
    nor logs in again."""
    for unknown, expected in (("refuse", True), ("hold", False)):
        hub = DialinHub(unknown=unknown)  # type: ignore[arg-type]
        if expected:
            hub.inventory_loaded([DEVICE])
        listener = await _listening(hub)
        spec = ConcentratorSpec(
            port=listener.port, address=ADDRESS, meters=1, latency_ms=0, heartbeat_s=0.1, login_timeout_s=0.5
        )
        try:
            async with SimConcentrator(spec) as sim:

                async def beating() -> bool:
                    return sim.counts["heartbeats"] >= 2 * 3  # twice the unconfirmed-heartbeat limit

                await wait_until(
                    beating, 30, f"heartbeats of a {'bound' if expected else 'held'} concentrator"
                )
                counts = dict(sim.counts)
        finally:
            await listener.stop()
        assert counts["connections"] == 1 and counts["logins"] == 1, (unknown, counts)
        assert counts.get("heartbeat_failures", 0) == 0 and counts.get("login_failures", 0) == 0, counts
        assert hub.counts["heartbeats"] >= 5 and hub.counts.get("unsolicited_bytes", 0) == 0, hub.counts


async def test_an_impostor_concentrator_is_closed_by_its_archive_before_any_request(
    pg_dsn: str, tmp_path: Path
) -> None:
    hub = DialinHub()
    listener = await _listening(hub)
    spec = ConcentratorSpec(port=listener.port, address=ADDRESS, meters=3, latency_ms=20, redial_s=0.3)
    real = SimConcentrator(spec)
    conn = await asyncpg.connect(pg_dsn)
    await import_inventory(
        conn, read_inventory(inventory_toml(tmp_path / "inv.toml", f"gdw1376://{ADDRESS}", real))
    )
    engine = Engine(
        engine_config(["energy_import_kwh"]),
        daemon_dsn(pg_dsn),
        ReadingWriter(daemon_dsn(pg_dsn), spool_dir=tmp_path / "spool"),
        DriverPort(hub=hub),
    )
    await engine.start()
    try:
        # same terminal address, other meters: it logs in while the real one is away
        async with SimConcentrator(replace(spec, seed=99)) as impostor:
            await wait_until(lambda: hub.online(DEVICE), 20)
            ts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            engine.run_cycle(ts)
            await engine.wait_cycles()
            await engine.writer.flush()
            assert hub.counts["identity_mismatch"] >= 1
            assert impostor.counts["afn_0C"] == 0 and impostor.counts["forwards"] == 0  # archive read only
            assert await conn.fetchval("SELECT count(*) FROM readings") == 0
        await wait_until(lambda: not hub.online(DEVICE), 20)
        async with real:
            await wait_until(lambda: hub.online(DEVICE), 20)
            engine.run_cycle(ts)
            await engine.wait_cycles()
            await engine.writer.flush()
            energy = await conn.fetch(ENERGY_SQL, "energy_import_kwh")
            collected = {address: reading.total for address, reading in real.pool.collected.items()}
            assert {r["address"]: r["value"] for r in energy} == pytest.approx(collected)
            assert hub.live[DEVICE].verified
    finally:
        await engine.stop()
        await listener.stop()
        await conn.close()


async def test_a_released_link_leaves_the_login_up_for_the_next_link() -> None:
    """A cluster member checks a login before it claims the channel (``DialinConcentratorLink.release``):
    the connection stays up and logged in, the listener confirms its heartbeats, and the next link
    (the channel's worker) reads through it."""
    hub = DialinHub()
    hub.inventory_loaded([DEVICE])
    listener = await _listening(hub)
    spec = ConcentratorSpec(port=listener.port, address=ADDRESS, meters=2, latency_ms=0, heartbeat_s=0.2)
    config = parse_channel_url(f"gdw1376://{ADDRESS}")
    try:
        async with SimConcentrator(replace(spec, redial_s=60)) as sim:
            await wait_until(lambda: hub.online(DEVICE) and sim.logged_in.is_set(), 20, "the login")
            check = DialinConcentratorLink(config, hub)
            await check.open()
            assert sorted(await read_archive(check, [1, 2, 3])) == [1, 2]
            await check.release()
            beats = sim.counts["heartbeats"]
            await wait_until(lambda: sim.counts["heartbeats"] > beats + 2, 10, "heartbeats after the release")
            worker = DialinConcentratorLink(config, hub)
            await worker.open()
            assert sorted(await read_archive(worker, [1, 2, 3])) == [1, 2]
            await worker.close()
            counts = sim.counts
            assert (counts["connections"], counts["redials"], counts["heartbeat_failures"]) == (1, 0, 0)
    finally:
        await listener.stop()
