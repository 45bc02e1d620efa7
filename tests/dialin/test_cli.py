"""``headend listen``, ``headend read|scan dtu://ID --listen`` and ``headend sim dtu`` as real processes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from headend.inventory import import_inventory, read_inventory
from simulators import BusSpec, SimBus
from simulators.bus import meter_addresses
from tests.support import cli
from tests.support.cli import cli_env, finish, stop
from tests.support.operators import add_operators, operator_env
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(120)


async def spawn(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await cli.spawn(*args, env=env or cli_env(HEADEND_METER_PASSWORD="000000"))


async def test_read_and_scan_through_a_dtu_that_dials_in() -> None:
    port = free_port()
    addresses = meter_addresses(31, 2)
    sim = await spawn(
        "sim",
        "dtu",
        "--connect",
        f"127.0.0.1:{port}",
        "--id",
        "DTU-0031",
        "--meters",
        "2",
        "--seed",
        "31",
        "--heartbeat",
        "0.2",
        "--backoff",
        "0.1",
        "--json",
    )
    try:
        assert sim.stdout is not None
        described = json.loads(await asyncio.wait_for(sim.stdout.readline(), 30))
        assert described["id"] == "DTU-0031" and described["meters"] == addresses
        code, out, err = await finish(
            await spawn(
                "read",
                "dtu://DTU-0031?turnaround_ms=500",
                "--listen",
                f"127.0.0.1:{port}",
                "-a",
                addresses[1],
                "energy_import_kwh",
                "--heartbeat-packet",
                "HB",
                "--json",
            )
        )
        assert code == 0, err
        assert json.loads(out)["values"]["energy_import_kwh"] > 0
        code, out, err = await finish(
            await spawn(
                "scan",
                "dtu://DTU-0031",
                "--listen",
                f"127.0.0.1:{port}",
                "--candidates",
                ",".join([*addresses, "000000000001"]),
                "--json",
            )
        )
        assert code == 0, err
        assert json.loads(out)["meters"] == sorted(addresses)
        code, out, err = await finish(
            await spawn(
                "switch",
                "dtu://DTU-0031",
                "off",
                "--listen",
                f"127.0.0.1:{port}",
                "-a",
                addresses[0],
                "--meter-number",
                addresses[0],  # the simulated meters' number is their address
                "--operator",
                "42",
                "--no-record",
                "--json",
            )
        )
        assert code == 0, err
        switched = json.loads(out)
        assert switched["status"] == "confirmed" and switched["state"]["open"] is True  # read back
    finally:
        _, _, err = await stop(sim)
    assert "'registered'" in err and "'dropped'" in err  # counts printed; it redialled between commands


async def test_read_of_a_dtu_that_never_dials_in_is_one_line() -> None:
    code, out, err = await finish(
        await spawn(
            "read", "dtu://DTU-9999", "--listen", f"127.0.0.1:{free_port()}", "-a", "1", "--wait", "0.5"
        )
    )
    assert code == 1 and out == ""
    assert err.strip() == "error: dtu://DTU-9999: offline (no live connection from the device)"
    code, _, err = await finish(await spawn("read", "dtu://DTU-9999", "-a", "1"))
    assert code == 1 and "give --listen HOST:PORT" in err and "Traceback" not in err


async def test_listen_prints_each_device_with_its_heartbeats() -> None:
    port = free_port()
    listen = await spawn("listen", f"127.0.0.1:{port}", "--kind", "dtu", "--heartbeat-packet", "HB", "--json")
    from simulators.dtu import DtuSpec, SimDtu

    bus = SimBus(BusSpec(meters=1, transport="carried"))
    dtu = SimDtu(DtuSpec("DTU-0077", "127.0.0.1", port, heartbeat=b"HB", heartbeat_s=0.1, backoff_s=0.1), bus)
    await dtu.start()
    events: list[dict[str, object]] = []
    try:
        assert listen.stdout is not None
        while sum(1 for e in events if e["event"] == "heartbeat") < 3:
            line = await asyncio.wait_for(listen.stdout.readline(), 30)
            assert line, "listen exited early"
            events.append(json.loads(line))
    finally:
        await dtu.stop()
        await stop(listen)
    held = next(e for e in events if e["event"] == "held")
    assert held["identity"] == "DTU-0077" and str(held["peer"]).startswith("127.0.0.1:")
    assert [e["heartbeats"] for e in events if e["event"] == "heartbeat"][:3] == [1, 2, 3]


async def test_bad_listen_and_sim_options_are_one_line() -> None:
    code, _, err = await finish(await spawn("listen", "nowhere", "--for", "1"))
    assert code == 1 and err.strip() == "error: want HOST:PORT, got 'nowhere'"
    code, _, err = await finish(
        await spawn("sim", "dtu", "--connect", "127.0.0.1:1", "--faults", "explode=1")
    )
    assert code == 2 and err.startswith("error: unknown DTU fault 'explode=1'") and "Traceback" not in err


async def test_modbus_rtu_meters_behind_a_dtu_are_read_from_the_cli() -> None:
    port = free_port()
    sim = await spawn(
        "sim", "dtu", "--connect", f"127.0.0.1:{port}", "--id", "DTU-MB01", "--protocol", "modbus",
        "--model", "eastron_sdm120", "--meters", "2", "--backoff", "0.1", "--json",
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        described = json.loads(await asyncio.wait_for(sim.stdout.readline(), 30))
        assert described["meters"] == [1, 2]
        code, out, err = await finish(
            await spawn(
                "read",
                "dtu://DTU-MB01?baud=9600&parity=N",
                "--listen",
                f"127.0.0.1:{port}",
                "-p",
                "modbus",
                "--unit",
                "2",
                "--model",
                "eastron_sdm120",
                "voltage_a_v",
                "--json",
            )
        )
        assert code == 0, err
        assert 200 < json.loads(out)["values"]["voltage_a_v"] < 260
    finally:
        await stop(sim)


async def test_switch_through_a_dtu_is_a_recorded_command_of_a_signed_in_operator(
    pg_dsn: str, tmp_path: Path
) -> None:
    from simulators.dtu import DtuSpec, SimDtu

    port = free_port()
    bus = SimBus(BusSpec(meters=1, seed=90, transport="carried", password="271828"))
    (meter,) = bus.meters
    inventory = tmp_path / "inv.toml"
    inventory.write_text(
        '[[channels]]\nname = "dtu-0090"\nurl = "dtu://DTU-0090"\n\n'
        f'[[meters]]\nchannel = "dtu-0090"\nprotocol = "dlt645-2007"\naddress = "{meter.address}"\n'
        'model = "dlt645-generic"\nhas_relay = true\n'
    )
    conn = await asyncpg.connect(pg_dsn)
    dtu = await SimDtu(DtuSpec("DTU-0090", "127.0.0.1", port, backoff_s=0.1), bus).start()
    try:
        await import_inventory(conn, read_inventory(inventory))
        await add_operators(conn, o1007="operator")
        switch = ("switch", "dtu://DTU-0090", "off", "--listen", f"127.0.0.1:{port}", "--operator", "1007")
        recorded = (*switch, "--dsn", pg_dsn, "--reason", "meter tampered")
        env = operator_env() | {"HEADEND_METER_PASSWORD": "271828"}
        # a wildcard is refused before anything listens, recorded or not
        code, _, err = await finish(await spawn(*recorded, "-a", "AAAAAAAAAAAA", env=env))
        assert code == 1 and "wildcard" in err and "Traceback" not in err
        code, _, err = await finish(await spawn(*switch, "-a", "999999999999", "--no-record", env=env))
        assert code == 1 and "broadcast" in err
        assert bus.requests[0x1C] == 0 and await conn.fetchval("SELECT count(*) FROM commands") == 0

        # no password to a device that has not proved who it is: no number, or a wrong one
        code, _, err = await finish(await spawn(*recorded, "-a", meter.address, env=env))
        assert code == 1 and "--meter-number" in err and "Traceback" not in err
        wrong = ("--meter-number", "000000000001")
        code, _, err = await finish(await spawn(*recorded, "-a", meter.address, *wrong, env=env))
        assert code == 1 and "does not answer meter number 000000000001" in err
        assert bus.requests[0x1C] == 0 and await conn.fetchval("SELECT count(*) FROM commands") == 0

        number = ("--meter-number", meter.address)
        code, _, err = await finish(await spawn(*recorded, "-a", meter.address, *number, env=env))
        assert code == 0, err
        assert meter.model.relay.open and bus.requests[0x1C] == 1
        row = await conn.fetchrow("SELECT cause, operator, state::text AS state FROM commands")
        assert tuple(row) == ("field", "1007", "confirmed")
    finally:
        await dtu.stop()
        await conn.close()
