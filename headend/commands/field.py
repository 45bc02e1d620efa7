"""Field-engineer commands: read, switch, clock, profile and scan one bus, through the daemon's code path.

Every command opens the channel and builds the driver exactly as the engine does
(``headend.transport.open_channel`` + ``headend.drivers.make_driver``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from headend.commands.listen import Heartbeat, Listen, Wait, open_field_channel
from headend.drivers import DriverError, ModbusDriver, make_driver
from headend.secrets import MeterSecrets, SecretsError
from headend.transport import (
    Channel,
    ChannelError,
    ChannelUrlError,
    DialinChannel,
    ModbusChannel,
    parse_channel_url,
)
from protocols.dlt645 import BROADCAST_ADDRESS, Deframer, DLT645Error, build_read, build_read_address, decode
from protocols.dlt645.frame import jsonable

PROTOCOLS = ("dlt645-2007", "dlt645-1997", "modbus")
Url = Annotated[
    str,
    typer.Argument(
        help="Channel URL: serial:///dev/ttyUSB0?baud=2400&parity=E, tcp://host:port, dtu://ID + --listen"
    ),
]
Protocol = Annotated[str, typer.Option("--protocol", "-p", help="dlt645-2007, dlt645-1997 or modbus.")]
Address = Annotated[str | None, typer.Option("--address", "-a", help="DL/T 645 meter address (12 digits).")]
Unit = Annotated[int | None, typer.Option("--unit", help="Modbus unit id.")]
Model = Annotated[str | None, typer.Option("--model", help="Meter model file in config/models.")]
Secrets = Annotated[str | None, typer.Option("--secrets", help="Secrets TOML with meter passwords.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


class FieldError(Exception):
    """A failure to report as one line with a non-zero exit code."""


@dataclass(frozen=True, slots=True)
class DialIn:
    """The ``--listen`` options: for ``dtu://ID``, where the device dials in and how long to wait."""

    listen: str | None = None
    wait_s: float = 60.0
    heartbeat: str = ""


async def _driver(
    url: str,
    protocol: str,
    address: str | None,
    unit: int | None,
    model: str | None,
    secrets: str | None,
    dial_in: DialIn,
) -> tuple[Any, Any]:
    if protocol not in PROTOCOLS:
        raise FieldError(f"--protocol must be one of {', '.join(PROTOCOLS)}")
    channel = await open_field_channel(url, dial_in.listen, dial_in.wait_s, dial_in.heartbeat)
    if protocol == "modbus":
        if unit is None:
            raise FieldError("--unit is required for Modbus meters")
        if not isinstance(channel, ModbusChannel | DialinChannel):
            await channel.close()
            raise FieldError("Modbus meters need a modbus-tcp://, rtu-over-tcp:// or dtu:// channel URL")
        return channel, make_driver("modbus", channel, unit, model)
    if not address:
        raise FieldError("--address is required for DL/T 645 meters")
    return channel, make_driver(protocol, channel, address.rjust(12, "0"), model, MeterSecrets.load(secrets))


def _run(work: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run the command's coroutine; turn every expected failure into one line and exit code 1."""
    try:
        return asyncio.run(work())
    except (
        FieldError,
        DriverError,
        ChannelError,
        ChannelUrlError,
        SecretsError,
        DLT645Error,
        ValueError,
    ) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


def _field_table(title: str, data: dict[str, Any]) -> Table:
    """A two-column table of a result object (nested objects shown as JSON)."""
    table = Table(title=title)
    table.add_column("field")
    table.add_column("value")
    for key, value in data.items():
        table.add_row(key, json.dumps(jsonable(value)) if isinstance(value, dict | list) else str(value))
    return table


def _print(data: dict[str, Any], as_json: bool, table: Table) -> None:
    if as_json:
        typer.echo(json.dumps(jsonable(data), ensure_ascii=False))
    else:
        Console().print(table)


def read_command(
    url: Url,
    items: Annotated[
        list[str] | None, typer.Argument(help="Quantities (energy_import_kwh ...) or DIs.")
    ] = None,
    protocol: Protocol = "dlt645-2007",
    address: Address = None,
    unit: Unit = None,
    model: Model = None,
    secrets: Secrets = None,
    listen: Listen = None,
    wait: Wait = 60.0,
    heartbeat: Heartbeat = "",
    as_json: Json = False,
) -> None:
    """Read quantities or raw data identifiers from one meter."""

    async def work() -> dict[str, Any]:
        channel, driver = await _driver(
            url, protocol, address, unit, model, secrets, DialIn(listen, wait, heartbeat)
        )
        try:
            names = items or list(driver.model.points if protocol == "modbus" else driver.plan)
            values: dict[str, Any] = {}
            unsupported: dict[str, str] = {}
            for name in names:
                is_di = protocol != "modbus" and all(c in "0123456789abcdefABCDEF" for c in name)
                if not is_di:
                    got = await driver.read([name])
                    values.update(got)
                    unsupported.update(driver.unsupported)
                else:
                    try:
                        values[name.upper()] = await driver.read_di(name.upper())
                    except DriverError as exc:
                        unsupported[name.upper()] = str(exc)
            return {
                "address": driver.address,
                "protocol": protocol,
                "values": values,
                "unsupported": unsupported,
            }
        finally:
            await channel.close()

    result = _run(work)
    table = Table(title=f"meter {result['address']}")
    table.add_column("item")
    table.add_column("value")
    for name, value in result["values"].items():
        table.add_row(name, json.dumps(jsonable(value)) if isinstance(value, dict | list) else str(value))
    for name, reason in result["unsupported"].items():
        table.add_row(name, f"[red]{reason}[/red]")
    _print(result, as_json, table)


def switch_command(
    url: Url,
    action: Annotated[str, typer.Argument(help="off, on or close-allowed")],
    operator: Annotated[
        str, typer.Option("--operator", help="Operator code recorded by the meter (8 digits).")
    ],
    protocol: Protocol = "dlt645-2007",
    address: Address = None,
    unit: Unit = None,
    model: Model = None,
    secrets: Secrets = None,
    listen: Listen = None,
    wait: Wait = 60.0,
    heartbeat: Heartbeat = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the command; send nothing.")] = False,
    as_json: Json = False,
) -> None:
    """Switch the relay and confirm it by reading the state back."""
    action = action.replace("-", "_")

    async def work() -> dict[str, Any]:
        channel, driver = await _driver(
            url, protocol, address, unit, model, secrets, DialIn(listen, wait, heartbeat)
        )
        try:
            if action not in ("off", "on", "close_allowed"):
                raise FieldError("action must be off, on or close-allowed")
            if dry_run:
                if protocol == "modbus":
                    return {
                        "status": "dry-run",
                        "action": action,
                        "unit": driver.unit_id,
                        "operator": operator,
                        "sent": False,
                    }
                if driver.credentials is None:
                    raise FieldError(f"no password configured for meter {driver.address}")
                return {
                    "status": "dry-run",
                    "action": action,
                    "address": driver.address,
                    "operator": operator,
                    "password_level": driver.credentials.level,
                    "sent": False,
                }
            return (await driver.switch(action, operator=operator)).to_json()
        finally:
            await channel.close()  # also on a dry run: a dtu:// --listen channel stops its listener

    result = _run(work)
    _print(result, as_json, _field_table(f"switch {action}", result))
    if result["status"] not in ("confirmed", "dry-run"):
        raise typer.Exit(code=1)


def clock_command(
    url: Url,
    protocol: Protocol = "dlt645-2007",
    address: Address = None,
    unit: Unit = None,
    model: Model = None,
    secrets: Secrets = None,
    listen: Listen = None,
    wait: Wait = 60.0,
    heartbeat: Heartbeat = "",
    sync: Annotated[bool, typer.Option("--sync", help="Correct the clock if it is off.")] = False,
    as_json: Json = False,
) -> None:
    """Read (and with --sync correct) the meter clock."""

    async def work() -> dict[str, Any]:
        channel, driver = await _driver(
            url, protocol, address, unit, model, secrets, DialIn(listen, wait, heartbeat)
        )
        try:
            if sync:
                result = await driver.sync_clock()
                return {
                    "meter_time": result.meter_time,
                    "drift_s": result.drift.total_seconds(),
                    "action": result.action,
                    "reason": result.reason,
                    "drift_after_s": result.drift_after.total_seconds() if result.drift_after else None,
                }
            meter_time = await driver.read_clock()
            return {"meter_time": meter_time, "drift_s": (meter_time - datetime.now(UTC)).total_seconds()}
        finally:
            await channel.close()

    result = _run(work)
    _print(result, as_json, _field_table("meter clock", result))


def profile_command(
    url: Url,
    start: Annotated[datetime, typer.Option("--from", help="Start (UTC), e.g. 2026-11-22T00:00")],
    end: Annotated[datetime, typer.Option("--to", help="End (UTC).")],
    protocol: Protocol = "dlt645-2007",
    address: Address = None,
    unit: Unit = None,
    model: Model = None,
    secrets: Secrets = None,
    listen: Listen = None,
    wait: Wait = 60.0,
    heartbeat: Heartbeat = "",
    as_json: Json = False,
) -> None:
    """Read interval records from the meter's load profile (or daily freeze)."""

    async def work() -> dict[str, Any]:
        channel, driver = await _driver(
            url, protocol, address, unit, model, secrets, DialIn(listen, wait, heartbeat)
        )
        try:
            records = await driver.read_profile(start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))
        finally:
            await channel.close()
        return {
            "address": driver.address,
            "records": [{"ts": r.ts, "source": r.source, **r.values} for r in records],
        }

    result = _run(work)
    table = Table(title=f"profile of {result['address']}")
    for column in ("ts", "source", "energy_import_kwh"):
        table.add_column(column)
    for record in result["records"]:
        table.add_row(record["ts"].isoformat(), record["source"], str(record.get("energy_import_kwh")))
    _print(result, as_json, table)


def scan_command(
    url: Url,
    protocol: Protocol = "dlt645-2007",
    candidates: Annotated[str | None, typer.Option(help="Comma-separated addresses to probe.")] = None,
    model: Model = None,
    units: Annotated[str, typer.Option(help="Modbus unit ids to sweep, e.g. 1-32.")] = "1-32",
    listen: Listen = None,
    wait: Wait = 60.0,
    heartbeat: Heartbeat = "",
    as_json: Json = False,
) -> None:
    """Find meters on a bus: 0x13 on a one-meter line, a candidate list, or a 1997 read on 99..99."""

    async def work() -> dict[str, Any]:
        if protocol == "modbus":
            return {
                "protocol": protocol,
                "units": await _sweep(url, model or "eastron_sdm120", units, as_json),
            }
        if protocol not in PROTOCOLS:
            raise FieldError(f"--protocol must be one of {', '.join(PROTOCOLS)}")
        edition = 1997 if protocol == "dlt645-1997" else 2007
        channel = await open_field_channel(url, listen, wait, heartbeat)
        if isinstance(channel, ModbusChannel):
            await channel.close()
            raise FieldError("DL/T 645 scans need a serial://, tcp:// or dtu:// channel URL")
        found: list[str] = []
        try:
            probes = [a.strip().rjust(12, "0") for a in candidates.split(",")] if candidates else []
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

    result = _run(work)
    table = Table(title="meters found")
    table.add_column("address / unit")
    for found in result.get("meters", result.get("units", [])):
        table.add_row(str(found))
    _print(result, as_json, table)


async def _sweep(url: str, model: str, units: str, quiet: bool) -> list[int]:
    """Modbus unit ids that answer a read of the model's first point."""
    first, _, last = units.partition("-")
    try:
        ids = range(int(first), int(last or first) + 1)
    except ValueError:
        raise FieldError(f"--units wants a range like 1-32, got {units!r}") from None
    config = parse_channel_url(url)
    if config.scheme not in ("modbus-tcp", "rtu-over-tcp"):
        raise FieldError("Modbus sweeps need a modbus-tcp:// or rtu-over-tcp:// channel URL")
    channel = ModbusChannel(replace(config, retries=0))  # an absent unit id is silent: do not retry it
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


def register(app: typer.Typer) -> None:
    """Attach the field commands to the CLI."""
    app.command("read")(read_command)
    app.command("switch")(switch_command)
    app.command("clock")(clock_command)
    app.command("profile")(profile_command)
    app.command("scan")(scan_command)
