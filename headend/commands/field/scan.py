"""``headend scan``: find the meters on a bus (DL/T 645 candidates or one-meter line; Modbus unit sweep)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table

from headend import limits
from headend.commands.field.shared import (
    DialIn,
    FieldError,
    Json,
    Model,
    Protocol,
    Trace,
    Url,
    checked_url,
    print_result,
    run_field,
)
from headend.commands.field.trace import attach
from headend.commands.listen import Heartbeat, Listen, Wait, open_field_channel
from headend.drivers import DriverError, ModbusDriver, make_driver
from headend.transport import (
    Channel,
    ChannelError,
    ConcentratorLink,
    ModbusChannel,
    parse_channel_url,
)
from protocols.dlt645 import (
    BROADCAST_ADDRESS,
    Deframer,
    build_read,
    build_read_address,
    decode,
)


def scan_command(
    url: Url,
    protocol: Protocol = "dlt645-2007",
    candidates: Annotated[str | None, typer.Option(help="Comma-separated addresses to probe.")] = None,
    model: Model = None,
    units: Annotated[str, typer.Option(help="Modbus unit ids to sweep, e.g. 1-32.")] = "1-32",
    one_meter: Annotated[
        bool,
        typer.Option(
            "--one-meter", help="The line has exactly one meter: ask it for its address (no candidates)."
        ),
    ] = False,
    listen: Listen = None,
    wait: Wait = 60.0,
    heartbeat: Heartbeat = "",
    as_json: Json = False,
    trace: Trace = False,
) -> None:
    """Find meters on a bus: probe a candidate list, or ask the only meter of a one-meter line."""

    async def work() -> dict[str, Any]:
        checked_url(url, protocol)
        if protocol == "modbus":
            return {
                "protocol": protocol,
                "units": await _sweep(
                    url, model or "eastron_sdm120", units, as_json, DialIn(listen, wait, heartbeat), trace
                ),
            }
        probes = _candidates(candidates)
        if not probes and not one_meter:
            raise FieldError(
                "a DL/T 645 line answers 'who is there' only when it has one meter (several reply at"
                " once and only one is heard): pass --candidates ADDR,ADDR,... or, on a one-meter line,"
                " --one-meter"
            )
        edition = 1997 if protocol == "dlt645-1997" else 2007
        channel = await open_field_channel(url, listen, wait, heartbeat)
        if not isinstance(channel, Channel):  # modbus and concentrator URLs fail checked_url first
            await channel.close()
            raise FieldError("DL/T 645 scans need a serial://, tcp:// or dtu:// channel URL")
        if trace:
            attach(channel, protocol)
        found: list[str] = []
        try:
            with Progress(transient=True, disable=as_json) as progress:
                task = progress.add_task("scanning", total=max(1, len(probes)))
                if not probes:
                    request = (
                        build_read_address()
                        if edition == 2007
                        else build_read(BROADCAST_ADDRESS, "C032", 1997)
                    )
                    found += await _probe(channel, request)
                    progress.advance(task)
                for address in probes:
                    found += await _probe(
                        channel, build_read(address, "00010000" if edition == 2007 else "9010", edition)
                    )
                    progress.advance(task)
        finally:
            await channel.close()
        return {"protocol": protocol, "meters": sorted(set(found))}

    result = run_field(work)
    table = Table(title="meters found")
    table.add_column("address / unit")
    for found in result.get("meters", result.get("units", [])):
        table.add_row(str(found))
    print_result(result, as_json, table)


def _candidates(text: str | None) -> list[str]:
    """``--candidates`` as 12-digit addresses (each up to 12 decimal digits)."""
    if not text:
        return []
    addresses = [a.strip() for a in text.split(",")]
    for address in addresses:
        if not address.isdigit() or len(address) > 12:
            raise FieldError(f"--candidates: {address[:40]!r} is not a meter address (up to 12 digits)")
    return [a.rjust(12, "0") for a in addresses]


async def _sweep(url: str, model: str, units: str, quiet: bool, dial_in: DialIn, trace: bool) -> list[int]:
    """Modbus unit ids that answer a read of the model's first point (``trace``: every ADU printed)."""
    ids = limits.unit_range(units)
    config = replace(parse_channel_url(url), retries=0)  # an absent unit id is silent: do not retry it
    gateway = config.scheme in ("modbus-tcp", "rtu-over-tcp")
    channel: ModbusChannel | Channel
    if config.scheme == "dtu" or dial_in.listen:
        opened = await open_field_channel(url, dial_in.listen, dial_in.wait_s, dial_in.heartbeat, retries=0)
        if isinstance(opened, ConcentratorLink):  # modbus on a concentrator fails checked_url first
            await opened.close()
            raise FieldError("Modbus sweeps need a serial://, tcp://, dtu:// or Modbus gateway URL")
        channel = opened
    else:
        channel = ModbusChannel(config) if gateway else Channel(config)
    if trace:
        attach(channel, "modbus")
    found = []
    try:
        with Progress(transient=True, disable=quiet) as progress:
            task = progress.add_task("sweeping unit ids", total=len(ids))
            for unit in ids:
                driver = make_driver("modbus", channel, unit, model)
                assert isinstance(driver, ModbusDriver)
                try:
                    await driver.read([next(iter(driver.model.points))])
                    found.append(unit)
                except DriverError:
                    pass
                progress.advance(task)
    finally:
        await channel.close()
    return found


async def _probe(channel: Channel, request: bytes) -> list[str]:
    """Addresses of meters answering ``request`` (any normal or abnormal reply counts)."""
    try:
        raw, _ = await channel.exchange(request, Deframer(), lambda frame: bool(frame[8] & 0x80), retries=0)
    except ChannelError as exc:
        if "timeout" in str(exc):
            return []
        raise
    return [decode(raw).address]
