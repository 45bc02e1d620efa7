"""``--trace`` on the field commands: every frame sent and received, on stderr, in hex with its time,
direction and meaning; a traced frame decodes with ``headend decode`` as printed."""

from __future__ import annotations

import json
import re
from datetime import datetime

from simulators import BusSpec, start_bus
from tests.field.test_field_cli import headend

LINE = re.compile(r"^(\S+) (>>|<<|!!) ([0-9A-F ]+|-)  (.*)$")


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
