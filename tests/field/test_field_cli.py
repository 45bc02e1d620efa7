"""The field-engineer CLI (`headend read|switch|clock|profile|scan`) as a real process against simulators."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from headend.drivers import make_driver
from headend.transport import open_channel
from simulators import BusSpec, start_bus
from tests.support.cli import CliResult, cli_env, headend_async, spawn

PASSWORD = "271828"


async def headend(*args: str) -> CliResult:
    """The CLI as a process while this event loop keeps serving the simulated bus (no HEADEND_DSN)."""
    env = cli_env(drop=["HEADEND_DSN"], HEADEND_METER_PASSWORD=PASSWORD)
    return await headend_async(*args, env=env, timeout=60)


async def test_read_quantities_and_dis_as_json() -> None:
    async with await start_bus(BusSpec(meters=2, seed=70)) as bus:
        meter = bus.meters[1]
        code, out, err = await headend(
            "read", bus.url, "-a", meter.address, "energy_import_kwh", "04000503", "bogus", "--json"
        )
        assert code == 0, err
        result = json.loads(out)
        assert abs(result["values"]["energy_import_kwh"] - meter.model.registers.import_kwh) < 0.05
        assert result["values"]["04000503"]["relay_open"] is False
        assert result["unsupported"] == {"bogus": "not in the meter model"}


async def test_switch_dry_run_sends_nothing_then_real_switch_is_confirmed() -> None:
    async with await start_bus(BusSpec(meters=1, seed=71, password=PASSWORD)) as bus:
        address = bus.meters[0].address
        code, out, _ = await headend(
            "switch", bus.url, "off", "-a", address, "--operator", "42", "--dry-run", "--json"
        )
        assert code == 0 and json.loads(out)["sent"] is False
        assert sum(bus.requests.values()) == 0
        code, out, err = await headend(
            "switch", bus.url, "off", "-a", address, "--operator", "42", "--no-record", "--json"
        )
        assert code == 0, err
        result = json.loads(out)
        assert result["status"] == "confirmed" and result["state"]["open"] is True
        assert result["evidence"]["event_record"]["operator"] == "00000042"
        assert PASSWORD not in out + err  # the password is never printed
        bus.meters[0].model.relay.keep_power = True
        code, out, _ = await headend(
            "switch", bus.url, "on", "-a", address, "--operator", "42", "--no-record", "--json"
        )
        assert code == 0 and json.loads(out)["status"] == "confirmed"
        code, out, err = await headend(
            "switch", bus.url, "off", "-a", address, "--operator", "42", "--no-record", "--json"
        )
        assert PASSWORD not in out + err
        assert code == 1 and json.loads(out) | {"state": None} == json.loads(out) | {
            "status": "refused",
            "reason": "keep-power active",
            "state": None,
        }


async def test_clock_and_profile() -> None:
    async with await start_bus(BusSpec(meters=1, seed=72, clock_offsets_s={0: 90.0})) as bus:
        address = bus.meters[0].address
        code, out, err = await headend("clock", bus.url, "-a", address, "--json")
        assert code == 0, err
        assert 80 < json.loads(out)["drift_s"] < 100
        end = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None)
        start = end - timedelta(hours=1)
        code, out, err = await headend(
            "profile", bus.url, "-a", address, "--from", start.isoformat(), "--to", end.isoformat(), "--json"
        )
        assert code == 0, err
        records = json.loads(out)["records"]
        # one record per 15-minute boundary in [start, end] that the meter's clock (90 s fast) has reached
        meter_now = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=90)
        first = start + timedelta(minutes=-start.minute % 15)  # start is on a whole minute
        reached = [
            b for b in (first + timedelta(minutes=15 * k) for k in range(5)) if b <= min(end, meter_now)
        ]
        # (a boundary the meter reached only after the read may be missing)
        assert len(reached) - 1 <= len(records) <= len(reached), (records, reached)
        assert {r["source"] for r in records} == {"load_profile"}


async def test_scan_one_meter_line_and_candidates() -> None:
    async with await start_bus(BusSpec(meters=1, seed=73)) as bus:
        code, out, _ = await headend("scan", bus.url, "--one-meter", "--json")
        assert code == 0 and json.loads(out)["meters"] == [bus.meters[0].address]
    async with await start_bus(BusSpec(meters=3, seed=74)) as bus:
        wanted = [m.address for m in bus.meters[:2]] + ["000000000009"]
        code, out, _ = await headend("scan", bus.url, "--candidates", ",".join(wanted), "--json")
        assert code == 0 and json.loads(out)["meters"] == sorted(wanted[:2])
    async with await start_bus(BusSpec(meters=1, seed=75, edition=1997)) as bus:
        code, out, _ = await headend("scan", bus.url, "-p", "dlt645-1997", "--one-meter", "--json")
        assert code == 0 and json.loads(out)["meters"] == [bus.meters[0].address]


async def test_errors_are_one_line_with_non_zero_exit() -> None:
    async with await start_bus(BusSpec(meters=1, seed=76, faults="no_reply=1")) as bus:
        code, out, err = await headend("read", bus.url, "-a", bus.meters[0].address, "energy_import_kwh")
        hint = "try the other edition (--protocol dlt645-1997), check the address (headend scan finds it)"
        assert (
            code == 1
            and out == ""
            and err.strip()
            == (
                f"error: timeout after 2 tries; {hint} and the line settings in the URL (?baud=2400&parity=E)"
            )
        )
    code, _, err = await headend("read", "ftp://nowhere", "-a", "1")
    assert code == 1 and err.startswith("error: unsupported channel scheme")
    code, _, err = await headend("read", "tcp://127.0.0.1:1", "-a", "1")
    assert code == 1 and "cannot connect" in err


async def test_modbus_read_switch_and_unit_sweep() -> None:
    spec = BusSpec(protocol="modbus", model="hiking_dds238_2_znsr", transport="modbus-tcp", meters=2, seed=77)
    async with await start_bus(spec) as bus:
        args = ("-p", "modbus", "--model", "hiking_dds238_2_znsr")
        code, out, err = await headend("read", bus.url, *args, "--unit", "2", "energy_import_kwh", "--json")
        assert code == 0, err
        assert json.loads(out)["values"]["energy_import_kwh"] > 0
        code, out, err = await headend(
            "switch", bus.url, "off", *args, "--unit", "1", "--operator", "7", "--no-record", "--json"
        )
        assert code == 0, err
        assert json.loads(out)["status"] == "confirmed" and bus.meters[0].model.relay.open
        code, out, err = await headend("read", bus.url, *args, "--unit", "1", "relay")
        rows = [line.replace("│", " ").split() for line in out.splitlines() if " relay " in line]
        assert code == 0 and rows == [["relay", "open"]], err
        code, out, _ = await headend("read", bus.url, *args, "--unit", "2", "relay")
        assert code == 0 and "closed" in out
        code, out, err = await headend("read", bus.url, *args, "--unit", "9", "energy_import_kwh")
        assert (
            code == 1
            and out == ""
            and err.splitlines()
            == [  # no pymodbus lines, said once
                "error: timeout after 2 tries; check --unit (headend scan --units 1-247 finds them) and the"
                " line settings in the URL (?baud=9600&parity=N)"
            ]
        )
        code, out, err = await headend("scan", bus.url, *args, "--units", "1-4", "--json")
        assert code == 0, err
        assert json.loads(out)["units"] == [1, 2]


NOT_ONE_METER = {
    "AAAAAAAAAAAA": "AA wildcard digits",
    "0000000000AA": "AA wildcard digits",
    "999999999999": "the broadcast address",
    "ABCDEF": "exactly 12 decimal digits",
    "00000000ABCD": "not 12 decimal (BCD) digits",
    "1": "exactly 12 decimal digits",
}


@pytest.mark.long(seconds=35)
async def test_switch_and_clock_writes_to_a_wildcard_or_broadcast_switch_nothing() -> None:
    async with await start_bus(BusSpec(meters=3, seed=78, password=PASSWORD)) as bus:
        for address, why in NOT_ONE_METER.items():
            for action in ("off", "on"):
                code, out, err = await headend(
                    "switch", bus.url, action, "-a", address, "--operator", "1001", "--no-record"
                )
                assert code == 1 and out == "" and why in err and "Traceback" not in err, (address, err)
            code, _, err = await headend(
                "clock", bus.url, "-a", address, "--sync", "--operator", "1001", "--no-record"
            )
            assert code == 1 and why in err
        code, _, err = await headend(
            "switch", bus.url, "off", "-p", "modbus", "--unit", "0", "--operator", "1001", "--no-record"
        )
        assert code == 1 and "Modbus broadcast" in err
        assert bus.requests[0x1C] == 0 and bus.requests[0x14] == 0 and bus.requests[0x08] == 0
        # read every meter's relay back over the bus: all still closed
        channel = open_channel(bus.url)
        try:
            for meter in bus.meters:
                state = await make_driver("dlt645-2007", channel, meter.address).relay_state()
                assert state.open is False and meter.model.relay.open is False
        finally:
            await channel.close()


async def test_switch_refuses_bad_operator_ids_and_a_recorded_switch_without_a_reason() -> None:
    async with await start_bus(BusSpec(meters=1, seed=79, password=PASSWORD)) as bus:
        address = bus.meters[0].address
        for operator, why in (("", "is required"), ("  ", "is required"), ("ops1", "must be 1-8 digits")):
            code, _, err = await headend("switch", bus.url, "off", "-a", address, "--operator", operator)
            assert code == 1 and why in err
        code, _, err = await headend("switch", bus.url, "off", "-a", address, "--operator", "1001")
        assert code == 1 and "--reason is required" in err and "--no-record switches without" in err
        assert bus.requests[0x1C] == 0 and not bus.meters[0].model.relay.open


async def test_the_url_sim_pty_prints_works_as_printed_for_modbus_on_serial() -> None:
    """``headend sim modbus --pty`` prints a serial:// URL with its line settings (8N1 at 9600); the
    CLI reads and sweeps Modbus meters over it (RTU on a serial line, as the daemon does)."""
    sim = await spawn("sim", "modbus", "--model", "eastron_sdm120", "--meters", "2", "--pty", "--json")
    try:
        assert sim.stdout is not None
        url = json.loads(await asyncio.wait_for(sim.stdout.readline(), 30))["url"]
        assert url.startswith("serial:///dev/") and url.endswith("?baud=9600&parity=N")
        args = ("-p", "modbus", "--model", "eastron_sdm120")
        code, out, err = await headend("read", url, *args, "--unit", "2", "energy_import_kwh", "--json")
        assert code == 0, err
        assert json.loads(out)["values"]["energy_import_kwh"] > 0
        code, out, err = await headend("scan", url, *args, "--units", "1-3", "--json")
        assert code == 0, err
        assert json.loads(out)["units"] == [1, 2]
    finally:
        sim.terminate()
        await asyncio.wait_for(sim.wait(), 30)


async def test_the_url_sim_dlt645_pty_prints_works_as_printed() -> None:
    """``headend sim dlt645 --pty`` prints its line settings (9600 baud, even parity by default); a pty
    cannot carry parity, so the channel opens a pty without it and the printed URL reads the meter."""
    sim = await spawn("sim", "dlt645", "--pty", "--baud", "9600", "--seed", "91", "--json")
    try:
        assert sim.stdout is not None
        printed = json.loads(await asyncio.wait_for(sim.stdout.readline(), 30))
        url, address = printed["url"], printed["meters"][0]
        assert url.startswith("serial:///dev/") and url.endswith("?baud=9600")  # parity E: the default
        code, out, err = await headend("read", url, "-a", address, "energy_import_kwh", "--json")
        assert code == 0, err
        assert json.loads(out)["values"]["energy_import_kwh"] > 0
        code, out, err = await headend("read", url, "-a", address, "energy_import_kwh", "--json")
        assert code == 0, err  # a second open of the same pty (its settings already changed once)
    finally:
        sim.terminate()
        await asyncio.wait_for(sim.wait(), 30)
