"""``--trace`` on the field commands: every frame sent and received, on stderr, in hex with its time,
direction and meaning; a traced frame decodes with ``headend decode`` as printed."""

from __future__ import annotations

import json
import re
from datetime import datetime

from simulators import BusSpec, start_bus
from tests.concentrator.support import ADDRESS, listening, url_of
from tests.field.test_field_cli import PASSWORD, headend

LINE = re.compile(r"^(\S+) (>>|<<|!!) ([0-9A-F* ]+|-)  (.*)$")  # ** : a password byte


def _frames(stderr: str) -> list[tuple[str, str, str]]:
    """(direction, hex, meaning) of each trace line; every line's time is an ISO 8601 UTC time."""
    found = []
    for line in stderr.splitlines():
        match = LINE.match(line)
        assert match, line
        assert datetime.fromisoformat(match[1]).utcoffset() is not None
        found.append((match[2], match[3], match[4]))
    return found


async def test_dlt645_read_traces_each_request_and_reply() -> None:
    async with await start_bus(BusSpec(meters=1, seed=90)) as bus:
        meter = bus.meters[0]
        code, out, err = await headend(
            "read", bus.url, "-a", meter.address, "energy_import_kwh", "--json", "--trace"
        )
        assert code == 0, err
        assert json.loads(out)["values"]["energy_import_kwh"] > 0  # stdout is still one JSON object
        frames = _frames(err)
        assert [d for d, _, _ in frames] == [">>", "<<"] and sum(bus.requests.values()) == 1
        (_, _, asked), (_, reply, answered) = frames
        assert (
            asked
            == f"address {meter.address}, function 0x11, request, DI 00010000 forward_active_energy_total"
        )
        assert re.fullmatch(
            f"address {meter.address}, function 0x11, response, DI 00010000 forward_active_energy_total"
            r" = [0-9.]+ kWh",
            answered,
        ), answered
        code, decoded, err = await headend("decode", reply, "--json")
        assert code == 0, err
        assert abs(json.loads(decoded)["value"] - json.loads(out)["values"]["energy_import_kwh"]) < 0.01
        code, plain, quiet = await headend(
            "read", bus.url, "-a", meter.address, "energy_import_kwh", "--json"
        )
        assert code == 0 and json.loads(plain)["values"] and "<<" not in quiet  # no trace unless asked


async def test_modbus_read_traces_the_adus() -> None:
    spec = BusSpec(protocol="modbus", model="eastron_sdm120", transport="modbus-tcp", meters=1, seed=91)
    async with await start_bus(spec) as bus:
        args = ("-p", "modbus", "--model", "eastron_sdm120", "--unit", "1")
        code, out, err = await headend("read", bus.url, *args, "energy_import_kwh", "--json", "--trace")
        assert code == 0, err
        assert json.loads(out)["values"]["energy_import_kwh"] > 0
        frames = _frames(err)
        assert [d for d, _, _ in frames] == [">>", "<<"]
        assert re.fullmatch(r"transaction \d+, unit 1, function 0x04", frames[0][2]), frames[0][2]
        assert re.fullmatch(r"transaction \d+, unit 1, function 0x04", frames[1][2]), frames[1][2]


async def test_scan_traces_each_probe_and_its_reply_or_silence() -> None:
    async with await start_bus(BusSpec(meters=1, seed=92)) as bus:
        present, absent = bus.meters[0].address, "000000000099"
        code, out, err = await headend(
            "scan", bus.url, "--candidates", f"{present},{absent}", "--json", "--trace"
        )
        assert code == 0, err
        assert json.loads(out)["meters"] == [present]
        frames = _frames(err)
        assert [d for d, _, _ in frames] == [">>", "<<", ">>", "!!"]  # a probe is not retried
        assert frames[0][2].startswith(f"address {present}, function 0x11, request, DI 00010000")
        assert frames[1][2].startswith(f"address {present}, function 0x11, response, DI 00010000")
        assert frames[2][2].startswith(f"address {absent}, function 0x11, request")
        assert frames[3][1:] == ("-", "no reply in time")
        assert bus.requests[0x11] == 2  # both probes reached the bus; only one meter answered


async def test_concentrator_read_traces_the_1376_frames_and_the_forwarded_dlt645_inside() -> None:
    async with listening(meters=4) as sim:
        record = sim.pool.archive[3]
        code, out, err = await headend(
            "read", url_of(sim), "-a", record.address, "--port", str(record.port), "--pn", "3",
            "energy_import_kwh", "04000503", "--json", "--trace",
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["values"]["04000503"]["relay_open"] is False
        frames = _frames(err)
        requests = [m for d, _, m in frames if d == ">>" and ("AFN 0C" in m or "AFN 10" in m)]
        assert len(requests) == sim.counts["afn_0C"] + sim.counts["forwards"] == 2
        forwarded = [(d, h, m) for d, h, m in frames if "AFN 10" in m]
        assert [d for d, _, _ in forwarded] == [">>", "<<"]
        (_, request, asked), (_, answer, answered) = forwarded
        assert request.endswith(" ".join(["**"] * 16) + " " + request.split()[-2] + " 16")  # the PW, hidden
        assert f"terminal {ADDRESS}, down, AFN 10" in asked and "p0 F1" in asked
        assert f"port {record.port}: [address {record.address}, function 0x11, request, DI 04000503" in asked
        assert f"terminal {ADDRESS}, up, AFN 10" in answered
        assert f"[address {record.address}, function 0x11, response, DI 04000503" in answered
        code, decoded, err = await headend("decode", answer, "--json")  # as printed
        assert code == 0, err
        assert json.loads(decoded)["forwarded"][0]["dlt645"]["address"] == record.address


def _encoded_password(level: int, password: str) -> str:
    """The password field as it travels in a DL/T 645 frame: level and the BCD digits, low byte first,
    each byte plus 0x33, in the trace's hex."""
    digits = bytes.fromhex(password)[::-1]
    return " ".join(f"{(b + 0x33) & 0xFF:02X}" for b in (level, *digits))


async def test_a_traced_switch_never_prints_the_password() -> None:
    """The 0x1C frame is traced with its password bytes as ``**``; the switch itself still works."""
    async with await start_bus(BusSpec(meters=1, seed=93, password=PASSWORD)) as bus:
        address = bus.meters[0].address
        code, out, err = await headend(
            "switch", bus.url, "off", "-a", address, "--operator", "42", "--no-record", "--json", "--trace"
        )
        assert code == 0, err
        assert json.loads(out)["status"] == "confirmed"
        control = [h for d, h, said in _frames(err.replace("**", "00")) if "function 0x1C, request" in said]
        assert len(control) == 1 and bus.requests[0x1C] == 1
        shown = [line for line in err.splitlines() if "function 0x1C, request" in line]
        assert shown[0].count("**") == 4  # level and three password bytes
        assert _encoded_password(2, PASSWORD) not in err and PASSWORD not in out + err
